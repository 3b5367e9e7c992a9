"""Which part of HAGCN does the work: the default against one change at a time, at the default training budget.

Each variant is one main.py job (HAGCN with the default flags but one) in a shared log folder, results/ablation_<
dataset>/; a job run again skips its finished cells (and --resume continues a cut one), so the grid can finish over
several sittings. The table (mean ± std over folds, the best bold, ties marked as in every results table) goes to
results/ablation_<dataset>/table.md, a block of docs/results.md.

    python bench/ablation.py --dataset fashion_mnist --bits 64            # one ref fold, hours on 2 cores
    python bench/ablation.py --dataset digits --folds 3 --bits 32 64      # minutes
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main  # noqa: E402
from results import markdown_table  # noqa: E402
from tables import commits_of, provenance, write_atomic  # noqa: E402

VARIANTS = {  # row name: the flags that differ from the defaults
    "default (gcn filter)": "",
    "identity filter (--task identity)": "--task identity",
    "no reconstruction (--recon_weight 0)": "--recon_weight 0",
    "the paper's batch graph and target": "--graph_edges batch --sim_target knn",
    "shuffled batches (--batch_group 1)": "--batch_group 1",
    "linear head (--hash_head linear)": "--hash_head linear",
}


def variant_argv(dataset: str, folds: int, bits: list[str], log_dir: Path, flags: str, extra: list[str]) -> list[str]:
    task = [] if "--task" in flags else ["--task", "gcn"]
    return ["--dataset", dataset, "--split", "ref", "--folds", str(folds), "--method", "hagcn", *task,
            "--exp_hash_len", *bits, "--resume", *shlex.split(flags), *extra, "--log_dir", str(log_dir)]


def main_cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="digits", help="a built-in dataset")
    p.add_argument("--folds", type=int, default=1, help="ref folds")
    p.add_argument("--bits", nargs="+", default=["64"], help="code lengths")
    p.add_argument("--out", default="results", help="the grid's log folder is OUT/ablation_<dataset>")
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    log_dir = Path(a.out) / f"ablation_{a.dataset}"
    rows, args = [], None
    for name, flags in VARIANTS.items():
        print(f"== {name} ==", file=sys.stderr, flush=True)
        status, found, args = main.run(variant_argv(a.dataset, a.folds, a.bits, log_dir, flags, extra))
        if status != 0:
            print(f"error: variant {name!r} stopped (main.py exit status {status}); run again to resume",
                  file=sys.stderr)
            return status
        rows += [{**r, "method": name, "supervised": False} for r in found]
    title = (f"HAGCN ablation, {main.table_title(args)}; rows: `{log_dir}/results.csv`, one variant per row "
             f"(`python bench/ablation.py {' '.join(argv)}`)")
    bits = [int(b) for b in a.bits]
    table = markdown_table(rows, bits, commit=commits_of(rows, log_dir), folds=a.folds)
    names = provenance(bits, a.folds, rows, [r["method"] for r in rows])
    write_atomic(log_dir / "table.md", f"## {title}\n\n{table}\n{names}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
