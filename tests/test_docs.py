"""The docs stay true: README.md and every docs/*.md page. Their results tables are generated blocks equal to
results/<grid>/table.md, their relative links and results/ paths resolve, every benchmark and validation output
under results/ is cited by some page, docs/flags.md is the parser's table, and the README stays short."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import tables  # noqa: E402
from arguments import flags_markdown  # noqa: E402

README = REPO / "README.md"
README_MAX_CHARS = 15_000
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
PRINTED_TABLE = re.compile(r"mAP@\d+ on \S+ \(split")  # the title line main.py prints above its table
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(rf"{FENCE.pattern}|`[^`\n]*`|^    [^\n]*", re.S | re.M)  # fenced blocks, code spans, indented code
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")  # Markdown links and images: (target "optional title")
RESULTS_PATH = re.compile(r"results/[\w./-]+")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def prose(page: Path) -> str:
    """The page without its code: links and headings live outside it."""
    return CODE.sub("", page.read_text())


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a page: lower case, punctuation dropped, spaces to hyphens, -1, -2 on repeats."""
    counts: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
        counts[slug] = counts.get(slug, 0) + 1
    return out


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_results_tables_are_generated_blocks_equal_to_results(page):
    text = page.read_text()
    assert tables.with_tables(text, REPO / "results", rel(page)) == text, "run bench/tables.py --tables_only --docs"
    outside = tables.TABLE_BLOCK.sub("", text)
    assert not re.search(r"^\| method \| labels \|", outside, re.M), "a results table outside a generated block"
    assert not PRINTED_TABLE.search(outside), "a printed main.py table pasted outside a generated block"


def test_readme_has_the_headline_block_and_results_page_every_grid():
    assert tables.TABLE_BLOCK.findall(README.read_text()) == ["fashion_mnist_ref"]
    grids = {p.parent.name for p in (REPO / "results").glob("*/table.md")}
    assert grids and set(tables.TABLE_BLOCK.findall((REPO / "docs" / "results.md").read_text())) == grids


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_named_results_paths_exist(page):
    named = {p.rstrip(".,;:") for p in RESULTS_PATH.findall(page.read_text())}
    assert [p for p in sorted(named) if not (REPO / p).exists()] == []


def validation_outputs() -> list[Path]:
    """The benchmark and validation outputs: the .txt files under results/bench/ and results/validation/, and the
    tables, CSV files and figures of results/validation/ itself (its subfolders convergence/, plateau/ and compare/
    hold the runs behind them: main.py's log folders)."""
    validation = REPO / "results" / "validation"
    return sorted({*(REPO / "results" / "bench").rglob("*.txt"),
                   *(p for ext in ("txt", "csv", "md") for p in validation.glob(f"*.{ext}")),
                   *(validation / "figures").glob("*.png")})


def test_every_bench_and_validation_output_is_cited():
    """Each output under results/bench/ and results/validation/ is named by some page: by its path, or by its file
    name in a page that names its folder."""
    texts = [page.read_text() for page in PAGES]
    outputs = validation_outputs()
    uncited = [rel(p) for p in outputs
               if not any(rel(p) in t or (p.name in t and f"{rel(p.parent)}/" in t) for t in texts)]
    assert outputs and uncited == []


def test_readme_links_every_docs_page():
    linked = {(REPO / t).resolve() for t in LINK.findall(prose(README))}
    assert [rel(p) for p in PAGES[1:] if p.resolve() not in linked] == []


def test_flags_page_is_generated_from_the_parser():
    assert (REPO / "docs" / "flags.md").read_text() == flags_markdown(), "run python arguments.py > docs/flags.md"


def test_readme_is_short():
    assert len(README.read_text()) <= README_MAX_CHARS, "move detail into docs/"
