"""Regenerate every results table and figure of the docs from the current code into one folder (default results/).

Each grid is one main.py job with its own --log_dir, results/<grid>/; a grid run again skips the cells already in
its results.csv (and --resume continues an interrupted cell from its checkpoint), so a long grid can finish over
several sittings. After each grid it writes results/<grid>/table.md (results.markdown_table: mean ± std over folds,
the best bold, ties marked, the git commit(s) the rows came from) and its figures (plots.py) under
results/figures/<grid>/, then gathers every grid's table.md into results/tables.md. With --docs it replaces each
`<!-- table: GRID -->` ... `<!-- /table: GRID -->` block of the named Markdown pages (README.md, docs/*.md) with
results/GRID/table.md, so that no results table in the docs is typed by hand (tests/test_docs.py checks it).

    python bench/tables.py                       # every grid (Fashion-MNIST takes hours on a CPU)
    python bench/tables.py --only digits         # one grid
    python bench/tables.py --dry_run             # print the main.py commands and stop
    python bench/tables.py --tables_only         # no training: tables from the cells already in results/
    python bench/tables.py --tables_only --docs README.md docs/*.md   # and into the table blocks of these pages
    python bench/tables.py --only digits --out /tmp/r -- --num_epochs 2 --hidden 64   # flags after -- go to main.py
    python bench/tables.py --tables_only --prune # and drop the runs of settings the code no longer uses

A partial grid's table says, in each cell that has fewer folds than the grid, how many it has.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main  # noqa: E402
from arguments import FILTER_NAMES  # noqa: E402
import plots  # noqa: E402
from results import markdown_table, read_results, run_id_of, write_csv  # noqa: E402

BITS = ["16", "32", "64"]


def subsample_flags(items: int, seed: int) -> list[str]:
    """HAGCN (gcn, identity) against ITQ and AGH at 32/64 bits on another Fashion-MNIST subsample and seed, 3 folds."""
    return ["--dataset", "fashion_mnist", "--subsample", str(items), "--seed", str(seed), "--split", "ref", "--folds",
            "3", "--method", "hagcn", "itq", "agh", "--task", "gcn", "identity", "--exp_hash_len", "32", "64"]


GRIDS = {  # name: (main.py flags, title of its table); every grid trains at the default budget (arguments.py)
    "fashion_mnist_ref": (["--dataset", "fashion_mnist", "--split", "ref", "--folds", "3", "--task", "gcn", "identity"],
                          "Fashion-MNIST, ref protocol, 3-fold cross-validation (each held-out third halved into "
                          "query and database)"),
    "fashion_mnist_standard": (["--dataset", "fashion_mnist", "--split", "standard", "--folds", "1", "--topk", "1000"],
                               "Fashion-MNIST, standard split (100 queries per class, 10,000 training items), "
                               "one fold, mAP@1000"),
    "fashion_mnist_seed1": (subsample_flags(20000, seed=1),
                            "Fashion-MNIST, another subsample and seed (20,000 items, seed 1), ref protocol, 3 folds: "
                            "HAGCN's lead outside the setting its defaults were chosen near"),
    "fashion_mnist_seed2": (subsample_flags(30000, seed=2),
                            "Fashion-MNIST, a third subsample and seed (30,000 items, seed 2), ref protocol, 3 folds"),
    "digits": (["--dataset", "digits", "--split", "ref", "--folds", "3", "--task", *FILTER_NAMES],
               "digits (scikit-learn), ref split, 3 folds, every filter"),
    "fashion_mnist_pairs": (["--dataset", "fashion_mnist_pairs", "--subsample", "20000", "--task", "gcn", "identity",
                             "--folds", "3"],
                            "Fashion-MNIST pairs (multi-label), 20,000 pairs, 3 folds"),
}
COMMON = ["--method", "all", "--exp_hash_len", *BITS, "--resume"]


def grid_argv(name: str, out: Path, extra: list[str]) -> list[str]:
    """main.py's flags for one grid: every method and filter at 16/32/64 bits unless the grid's own flags (which
    come after, so they win) name fewer, and its own log folder."""
    return [*COMMON, *GRIDS[name][0], "--log_dir", str(out / name), *extra]


def commits_of(rows: list[dict], log_dir: Path) -> str:
    """The git commit(s) the rows were computed by (each run's run.json), short, with counts when several."""
    counts: dict[str, int] = {}
    for r in rows:
        try:
            env = json.loads((log_dir / "runs" / r["run_id"] / "run.json").read_text())["environment"]
        except (OSError, ValueError, KeyError):
            env = {}
        commit = (env.get("git_commit") or "unknown")[:10]
        counts[commit] = counts.get(commit, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{c} ({n} runs)" for c, n in counts.items())


def in_grid_order(rows: list[dict], args) -> list[dict]:
    """The rows in the order the grid runs them: --method order, HAGCN's filters in --task order."""
    return sorted(rows, key=lambda r: (args.method.index(r["method"]),
                                       args.task.index(r["task"]) if r["method"] == "hagcn" else 0))


def section(name: str, rows: list[dict], args, log_dir: Path) -> str:
    """One grid's Markdown section: its table and where its rows live."""
    rows = in_grid_order(rows, args)
    table = markdown_table(rows, args.exp_hash_len, commit=commits_of(rows, log_dir), folds=args.folds)
    return (f"## {GRIDS[name][1]}\n\n{main.table_title(args)}; rows: `{log_dir}/results.csv`.\n\n{table}\n"
            f"{provenance(args.exp_hash_len, args.folds, rows)}\n")


def provenance(bits: list[int], folds: int, rows: list[dict], names: list[str] | None = None) -> str:
    """The comment under a generated table from which tests rebuild it: its code lengths, the grid's folds, the run
    id of each row in order and, where the row names are not the methods' (bench/ablation.py), each run's name."""
    text = f"<!-- bits: {' '.join(map(str, bits))}; folds: {folds}; run ids: {' '.join(r['run_id'] for r in rows)}"
    return text + (f"; names: {'|'.join(names)} -->" if names else " -->")


def finished_rows(argv: list[str]) -> tuple[list[dict], object]:
    """(the rows of results.csv that are cells of this grid under the current code's settings, its flags): a partial
    grid's table, without training anything."""
    args = main.parse_args(argv)
    ids = grid_ids(args)
    return [r for r in read_results(Path(args.log_dir) / "results.csv") if r["run_id"] in ids], args


def grid_ids(args) -> set[str]:
    """The run ids of every cell of the grid that `args` describes."""
    _, splits = main.load_data(args)
    return {run_id_of(main.run_settings(args, c.method, c.task, c.bits, c.fold))
            for fold in range(len(splits)) for c in main.grid_cells(args, fold)}


def prune(log_dir: Path, keep: set[str]) -> int:
    """Drop the rows of log_dir/results.csv and the run folders that are not cells of the grid (runs of settings the
    code no longer uses: they live on in git history); returns how many runs went."""
    rows = read_results(log_dir / "results.csv")
    gone = [r["run_id"] for r in rows if r["run_id"] not in keep]
    if gone:
        kept = [r for r in rows if r["run_id"] in keep]
        write_csv(log_dir / "results.csv", kept, list(dict.fromkeys(c for r in rows for c in r)))
    for run_id in gone:
        shutil.rmtree(log_dir / "runs" / run_id, ignore_errors=True)
    return len(gone)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


TABLE_BLOCK = re.compile(r"<!-- table: (\w+) -->\n.*?<!-- /table: \1 -->", re.S)


def with_tables(text: str, out: Path, page: str = "the page") -> str:
    """The Markdown text with each `<!-- table: GRID -->` ... `<!-- /table: GRID -->` block replaced by
    out/GRID/table.md without its title line, so that every results table in the docs is generated."""
    def block(m: re.Match) -> str:
        table_md = out / m.group(1) / "table.md"
        if not table_md.is_file():
            raise FileNotFoundError(f"{page}'s table block {m.group(1)!r} has no {table_md}")
        body = table_md.read_text().split("\n", 2)[2].strip()
        return f"<!-- table: {m.group(1)} -->\n{body}\n<!-- /table: {m.group(1)} -->"
    return TABLE_BLOCK.sub(block, text)


def fill_docs(pages: list[str], out: Path) -> int:
    """Replace the table blocks of every page (all pages are filled before any is written); exit status."""
    filled = []
    for page in map(Path, pages):
        try:
            filled.append((page, with_tables(page.read_text(), out, str(page))))
        except OSError as e:
            print(f"error: --docs {page}: {e.strerror or e}", file=sys.stderr)
            return 2
    for page, text in filled:
        if text != page.read_text():
            write_atomic(page, text)
            print(f"wrote the tables into {page}", file=sys.stderr)
    return 0


def main_cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results", help="folder of the grids' log folders, tables.md and figures/")
    p.add_argument("--only", nargs="+", choices=list(GRIDS), default=None, help="run only these grids")
    p.add_argument("--dry_run", action="store_true", help="print the main.py command of each grid and stop")
    p.add_argument("--tables_only", action="store_true",
                   help="train nothing: write the tables of the cells already in results/ (partial grids included)")
    p.add_argument("--prune", action="store_true",
                   help="drop the rows and run folders of each grid's log folder that are not cells of the grid")
    p.add_argument("--docs", "--readme", nargs="+", default=None, metavar="PAGE",
                   help="after the tables, replace the <!-- table: GRID --> blocks of these Markdown pages with them")
    a = p.parse_args(own)
    out = Path(a.out)
    names = a.only or list(GRIDS)
    if a.dry_run:
        for name in names:
            print("python main.py " + " ".join(grid_argv(name, out, extra)))
        return 0
    for name in names:
        if a.prune:
            gone = prune(out / name, grid_ids(main.parse_args(grid_argv(name, out, extra))))
            print(f"{name}: pruned {gone} run(s) of other settings", file=sys.stderr)
        if a.tables_only:
            rows, args = finished_rows(grid_argv(name, out, extra))
            if rows:
                write_atomic(out / name / "table.md", section(name, rows, args, out / name))
            continue
        print(f"== grid {name} ==", file=sys.stderr, flush=True)
        status, rows, args = main.run(grid_argv(name, out, extra))
        if status != 0:
            print(f"error: grid {name} stopped (main.py exit status {status}); run bench/tables.py again to resume",
                  file=sys.stderr)
            return status
        write_atomic(out / name / "table.md", section(name, rows, args, out / name))
        status = plots.main(["--log_dir", str(out / name), "--out", str(out / "figures" / name)])
        if status != 0:
            return status
    sections = [(out / name / "table.md").read_text() for name in GRIDS if (out / name / "table.md").is_file()]
    head = (f"# Results tables\n\nGenerated by `python bench/tables.py` (last: `{' '.join(argv)}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); figures in `{out}/figures/`.\n\n")
    write_atomic(out / "tables.md", head + "\n".join(sections))
    print(f"wrote {out / 'tables.md'}", file=sys.stderr)
    if a.docs:
        return fill_docs(a.docs, out)
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
