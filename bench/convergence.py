"""Where the deep methods converge: validation mAP against epoch, and the epochs and seconds to each curve's plateau.

Each dataset is one main.py grid (HAGCN-gcn, HAGCN-identity, Bi-half, DSH, HashNet and SHC, with ITQ as the bar,
at 32 and 64 bits) trained for up to --epochs epochs under the flags given after `--` (default: the CLI's
defaults), scoring the validation split every epoch (a labelled part of each fold's training split: the query and
database splits are never read). A curve stops early after --patience epochs without a better validation mAP.
Its plateau is the first epoch whose validation mAP is within --tolerance of the best it reaches; seconds count
training and validation from the start of the run (epochs.csv), not the one-off global graph or SHC's centres.

    python bench/convergence.py --dataset fashion_mnist    # one ref fold, hours on 2 cores; run again to resume
    python bench/convergence.py --dataset digits           # 3 ref folds, minutes
    python bench/convergence.py --dataset digits --tag cosine -- --lr_schedule cosine --lr 1e-3

Writes, under --out (default results/validation), convergence_<dataset>[_<tag>].csv (one row per curve and epoch),
convergence_<dataset>[_<tag>]_plateau.csv (one row per curve) and a figure in figures/; the runs themselves
(results.csv, epochs.csv, run.json) go to convergence/<dataset>[_<tag>]/.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main  # noqa: E402
from results import read_results, row_name  # noqa: E402

METHODS = ["hagcn", "itq", "bihalf", "dsh", "hashnet", "shc"]
FOLDS = {"fashion_mnist": 1, "digits": 3}


def grid_argv(dataset: str, epochs: int, patience: int, log_dir: Path, extra: list[str]) -> list[str]:
    return ["--dataset", dataset, "--split", "ref", "--folds", str(FOLDS.get(dataset, 1)), "--method", *METHODS,
            "--task", "gcn", "identity", "--exp_hash_len", "32", "64", "--num_epochs", str(epochs), "--val_every", "1",
            "--early_stop", str(patience), "--resume", *extra, "--log_dir", str(log_dir)]


def read_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, validation mAP, seconds since the start of training) of a run's epochs.csv."""
    with open(run_dir / "epochs.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["val_map"]]
    seconds = np.cumsum([float(r["seconds"]) + float(r["val_seconds"]) for r in rows])
    return (np.array([int(r["epoch"]) for r in rows]), np.array([float(r["val_map"]) for r in rows]), seconds)


def plateau(val: np.ndarray, tolerance: float) -> int:
    """Index of the first point within `tolerance` of the curve's best."""
    return int(np.flatnonzero(val >= val.max() - tolerance)[0])


def curves_of(rows: list[dict], log_dir: Path) -> dict[tuple[str, int, int], tuple]:
    """{(method, bits, fold): curve} of the trained runs among `rows`."""
    out = {}
    for r in rows:
        if int(r.get("epochs_trained") or 0) > 0:
            out[(row_name(r), int(r["hash_len"]), int(r["fold"]))] = read_curve(log_dir / "runs" / r["run_id"])
    return out


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def summary_rows(rows: list[dict], curves: dict, tolerance: float) -> list[list]:
    """One row per curve: its best validation mAP and where it is reached, its plateau, and its test mAP (the
    table's, for reference only: nothing here is chosen on it); closed-form methods give their validation mAP."""
    out = []
    for r in rows:
        key = (row_name(r), int(r["hash_len"]), int(r["fold"]))
        if key not in curves:
            out.append([*key, "", r["val_map"], "", "", "", "", r["map"]])
            continue
        epochs, val, seconds = curves[key]
        i = plateau(val, tolerance)
        out.append([*key, int(epochs[-1]), f"{val.max():.4f}", int(epochs[int(np.argmax(val))]), int(epochs[i]),
                    f"{seconds[i]:.1f}", f"{val[i]:.4f}", r["map"]])
    return out


def figure(curves: dict, bars: dict, title: str, path: Path) -> None:
    """Validation mAP against epoch, one panel per code length, the mean over folds where there are several."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bits = sorted({b for _, b, _ in curves})
    fig, axes = plt.subplots(1, len(bits), figsize=(5.2 * len(bits), 3.8), layout="constrained", squeeze=False)
    for ax, b in zip(axes[0], bits):
        for name in dict.fromkeys(n for n, bb, _ in curves if bb == b):
            folds = [curves[k] for k in curves if k[:2] == (name, b)]
            n = min(len(c[0]) for c in folds)
            mean = np.mean([c[1][:n] for c in folds], axis=0)
            ax.plot(folds[0][0][:n], mean, label=name, linewidth=2.0 if name.startswith("hagcn") else 1.2)
        for name, value in bars.get(b, {}).items():
            ax.axhline(value, color="grey", linestyle="--", linewidth=1)
            ax.annotate(name, (1, value), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8)
        ax.set(title=f"{b} bits", xlabel="epoch", ylabel="validation mAP@200 (tie-aware)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main_cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="digits", help="a built-in dataset (main.py --dataset)")
    p.add_argument("--epochs", type=int, default=200, help="the most epochs a curve runs")
    p.add_argument("--patience", type=int, default=30, help="stop a curve after this many epochs without a new best")
    p.add_argument("--tolerance", type=float, default=0.002, help="the plateau: within this much of the best")
    p.add_argument("--tag", default="", help="suffix of the output names (a variant's flags after --)")
    p.add_argument("--out", default="results/validation", help="folder of the CSV files, the figure and the runs")
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    name = a.dataset + (f"_{a.tag}" if a.tag else "")
    out = Path(a.out)
    log_dir = out / "convergence" / name
    status, rows, args = main.run(grid_argv(a.dataset, a.epochs, a.patience, log_dir, extra))
    if status != 0:
        print(f"error: the grid stopped (main.py exit status {status}); run the same command again to resume",
              file=sys.stderr)
        return status
    rows = [r for r in read_results(log_dir / "results.csv") if r["run_id"] in {r["run_id"] for r in rows}]
    curves = curves_of(rows, log_dir)
    write_csv(out / f"convergence_{name}.csv", ["method", "bits", "fold", "epoch", "val_map", "seconds"],
              [[*key, int(e), f"{v:.6f}", f"{s:.2f}"] for key, c in curves.items() for e, v, s in zip(*c)])
    summary = summary_rows(rows, curves, a.tolerance)
    write_csv(out / f"convergence_{name}_plateau.csv", ["method", "bits", "fold", "epochs_run", "best_val",
              "best_epoch", "plateau_epoch", "plateau_seconds", "plateau_val", "test_map"], summary)
    bars = {}
    for r in rows:
        if r["method"] == "itq" and r["val_map"]:
            bars.setdefault(int(r["hash_len"]), {}).setdefault("itq", []).append(float(r["val_map"]))
    bars = {b: {n: float(np.mean(v)) for n, v in d.items()} for b, d in bars.items()}
    figure(curves, bars, f"Validation {main.table_title(args)}: per epoch, mean over folds",
           out / "figures" / f"convergence_{name}.png")
    for row in summary:
        print(" ".join(map(str, row)))
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
