"""bench/tables.py end to end on tiny digits settings: it runs the grid into <out>/digits, writes a Markdown table
whose every cell is the mean ± std of the results.csv rows it came from, names the commit, draws the figures, and
a second call resumes (skips every finished cell). The committed results/ folder, where present, is checked the
same way: each table.md equals the table regenerated from its results.csv."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import tables  # noqa: E402
from results import append_result, markdown_table, read_results, row_name  # noqa: E402

TINY = ["--method", "hagcn", "itq", "--task", "gcn", "--exp_hash_len", "8", "16", "--folds", "2", "--num_epochs", "2",
        "--hidden", "64"]


def markdown_cells(text: str) -> dict[tuple[str, int], tuple[float, float | None]]:
    """{(row name, bits): (mean, std or None)} of the Markdown tables in text."""
    lines = text.splitlines()
    out = {}
    for i, line in enumerate(lines):
        if line.startswith("| method | labels |"):
            bits = [int(c.split()[0]) for c in line.strip("| ").split(" | ")[2:]]
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                cells = row.strip("| ").split(" | ")
                for b, cell in zip(bits, cells[2:]):
                    nums = re.findall(r"\d+\.\d+", cell)
                    if nums:
                        out[cells[0], b] = (float(nums[0]), float(nums[1]) if len(nums) > 1 else None)
    return out


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    (out / "commit").write_text(commit())  # the commit the runs are computed by (HEAD may move while tests run)
    assert tables.main_cli(["--only", "digits", "--out", str(out), "--", *TINY]) == 0
    return out


def test_markdown_cells_are_the_mean_and_std_of_results_csv(out):
    rows = read_results(out / "digits" / "results.csv")
    assert len(rows) == 2 * 2 * 2  # (hagcn-gcn, itq) x (8, 16 bits) x 2 folds
    cells = markdown_cells((out / "tables.md").read_text())
    assert set(cells) == {(n, b) for n in ("hagcn-gcn", "itq") for b in (8, 16)}
    for (name, bits), (mean, std) in cells.items():
        maps = [float(r["map"]) for r in rows if row_name(r) == name and int(r["hash_len"]) == bits]
        assert len(maps) == 2
        assert mean == pytest.approx(np.mean(maps), abs=5e-5) and std == pytest.approx(np.std(maps), abs=5e-5)


def test_tables_name_the_commit_and_figures_exist(out):
    text = (out / "tables.md").read_text()
    assert f"`{(out / 'commit').read_text()[:10]}`" in text
    assert "## digits" in text and "2 folds" in text
    figures = {p.name for p in (out / "figures" / "digits").glob("*.png")}
    assert {"digits_map_vs_bits.png", "digits_losses_16bits.png"} <= figures


def test_second_call_resumes_and_dry_run_only_prints(out, capsys):
    before = read_results(out / "digits" / "results.csv")
    assert tables.main_cli(["--only", "digits", "--out", str(out), "--", *TINY]) == 0
    assert read_results(out / "digits" / "results.csv") == before
    assert capsys.readouterr().err.count(": already in ") == 8
    assert tables.main_cli(["--dry_run", "--out", str(out / "dry")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(tables.GRIDS) and all(p.startswith("python main.py ") for p in printed)
    assert "--method all --exp_hash_len 16 32 64" in printed[0] and "--folds 3" in printed[0]
    assert not (out / "dry").exists()


def test_tables_only_rewrites_the_same_table_without_training(out, capsys):
    table_md = out / "digits" / "table.md"
    before, rows = table_md.read_text(), read_results(out / "digits" / "results.csv")
    table_md.unlink()
    assert tables.main_cli(["--tables_only", "--only", "digits", "--out", str(out), "--", *TINY]) == 0
    assert table_md.read_text() == before and read_results(out / "digits" / "results.csv") == rows
    assert "== grid" not in capsys.readouterr().err


def regenerated_tables(results_dir: Path):
    """(table.md text, the table regenerated from its results.csv and run ids) of every grid in results_dir."""
    for table_md in sorted(results_dir.glob("*/table.md")):
        text = table_md.read_text()
        found = re.search(r"<!-- bits: ([\d ]+);(?: folds: (\d+);)? run ids: ([0-9a-f ]*?)(?:; names: (.*))? -->", text)
        bits, folds, runs, names = found.groups()
        by_id = {r["run_id"]: r for r in read_results(table_md.parent / "results.csv")}
        rows = [by_id[i] for i in runs.split()]
        commit = tables.commits_of(rows, table_md.parent)
        if names:  # bench/ablation.py: each row is a variant of HAGCN, named in the comment
            rows = [{**r, "method": name, "supervised": False} for r, name in zip(rows, names.split("|"))]
        yield text, markdown_table(rows, [int(b) for b in bits.split()], commit=commit,
                                   folds=int(folds) if folds else None)


def test_generated_tables_match_their_results(out):
    found = list(regenerated_tables(out))
    assert len(found) == 1
    for text, table in found:
        assert table in text


def test_committed_results_tables_match_their_results_csv():
    found = list(regenerated_tables(REPO / "results"))
    if not found:
        pytest.skip("no results/<grid>/table.md committed yet")
    for text, table in found:
        assert table in text


def test_docs_blocks_are_replaced_by_their_table_md(out, tmp_path):
    body = (out / "digits" / "table.md").read_text().split("\n", 2)[2].strip()
    page = "# T\n\nbefore\n<!-- table: digits -->\n| stale | 0.1 |\n<!-- /table: digits -->\nafter\n"
    filled = tables.with_tables(page, out)
    assert filled == f"# T\n\nbefore\n<!-- table: digits -->\n{body}\n<!-- /table: digits -->\nafter\n"
    assert "stale" not in filled and tables.with_tables(filled, out) == filled
    with pytest.raises(FileNotFoundError, match="nosuchgrid"):
        tables.with_tables("<!-- table: nosuchgrid -->\nx\n<!-- /table: nosuchgrid -->", out)
    pages = [tmp_path / "README.md", tmp_path / "results.md"]
    for path in pages:
        path.write_text(page)
    cli = ["--tables_only", "--only", "digits", "--out", str(out)]
    assert tables.main_cli([*cli, "--docs", *map(str, pages), "--", *TINY]) == 0
    assert [path.read_text() for path in pages] == [filled, filled]
    pages[0].write_text(page)
    assert tables.main_cli([*cli, "--readme", str(pages[0]), "--", *TINY]) == 0  # --readme: the older name
    assert pages[0].read_text() == filled
    pages[0].write_text(page)  # a page with an unknown grid: no page is written
    pages[1].write_text("<!-- table: nosuchgrid -->\nx\n<!-- /table: nosuchgrid -->\n")
    assert tables.main_cli([*cli, "--docs", *map(str, pages), "--", *TINY]) == 2
    assert pages[0].read_text() == page


def test_prune_drops_the_runs_of_other_settings(out, tmp_path):
    """--prune keeps the grid's cells and removes rows and run folders that no current cell owns (e.g. a run of a
    former default budget)."""
    import shutil
    copy = tmp_path / "results"
    shutil.copytree(out / "digits", copy / "digits")
    rows = read_results(copy / "digits" / "results.csv")
    stale = dict(rows[0], run_id="0123456789ab")
    shutil.copytree(copy / "digits" / "runs" / rows[0]["run_id"], copy / "digits" / "runs" / stale["run_id"])
    append_result(copy / "digits" / "results.csv", stale)
    assert tables.main_cli(["--tables_only", "--prune", "--only", "digits", "--out", str(copy), "--", *TINY]) == 0
    assert read_results(copy / "digits" / "results.csv") == rows
    assert sorted(p.name for p in (copy / "digits" / "runs").iterdir()) == sorted(r["run_id"] for r in rows)
