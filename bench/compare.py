"""Compare flag settings on the validation split alone: the way a default is chosen without the query/database split.

Each configuration is one main.py job (the flags after `--`, then the configuration's own) in a shared log folder,
so a comparison run again skips its finished cells. The table holds each configuration's validation mAP (results.csv's
val_map: the fold's labelled validation part of its training split), mean ± std over folds, per method and code
length; the test mAP is not shown.

    python bench/compare.py --name pairs_target --configs "--sim_target diffusion" "--sim_target cosine" \\
        -- --dataset fashion_mnist_pairs --subsample 20000 --method hagcn itq --task gcn --exp_hash_len 32 64

Writes results/validation/<name>.md (the table, the command) and prints it; the runs go to
results/validation/compare/<name>/.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main  # noqa: E402
from results import atomic_write, row_name  # noqa: E402


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def table(found: dict[str, list[dict]], bits: list[int]) -> str:
    """Rows: configuration x method (in run order); columns: code lengths; cells: validation mAP over folds."""
    lines = ["| configuration | method | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---|---|" + "---:|" * len(bits)]
    for config, rows in found.items():
        for name in dict.fromkeys(row_name(r) for r in rows):
            cells = [[float(r["val_map"]) for r in rows if row_name(r) == name and int(r["hash_len"]) == b]
                     for b in bits]
            lines.append(f"| `{config or '(flags after --)'}` | {name} | "
                         + " | ".join(cell(c) if c else "-" for c in cells) + " |")
    return "\n".join(lines)


def main_cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", required=True, help="name of the comparison (its table and log folder)")
    p.add_argument("--configs", nargs="+", default=[""], help="flag settings to compare, one string each")
    p.add_argument("--out", default="results/validation", help="folder of the table and of compare/<name>/")
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    log_dir = Path(a.out) / "compare" / a.name
    found, args = {}, None
    for config in a.configs:
        status, rows, args = main.run([*extra, *shlex.split(config), "--resume", "--log_dir", str(log_dir)])
        if status != 0:
            print(f"error: configuration {config!r} stopped (main.py exit status {status}); run again to resume",
                  file=sys.stderr)
            return status
        if not args.val_queries:
            print("error: --val_queries 0: there is no validation split to compare on", file=sys.stderr)
            return 2
        found[config] = rows
    command = "python bench/compare.py " + shlex.join(argv)
    text = (f"# Validation mAP@{args.topk or 'all'} (tie-aware) of each configuration\n\n`{command}`\n\n"
            f"{main.table_title(args)}; validation: up to {args.val_queries} queries (at most a tenth of the "
            f"training rows) held out of each fold's training rows, against up to {args.val_db} training rows; runs "
            f"in `{log_dir}/`.\n\n"
            f"{table(found, args.exp_hash_len)}\n")
    atomic_write(Path(a.out) / f"{a.name}.md", lambda tmp: tmp.write_text(text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
