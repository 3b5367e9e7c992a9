"""Reaching HAGCN's validation plateau for less: rate schedules, batch sizes and bf16 against today's defaults.

The reference is a curve of bench/convergence.py (HAGCN-gcn at --bits, constant rate 1e-4, fp32, up to 200 epochs):
its plateau level is its best validation mAP minus --tolerance. Each candidate below trains the same model on the
same fold (main.py with the candidate's flags, validation every epoch) and reaches that level at some epoch, or
never. Time is epochs x seconds per epoch, and seconds per epoch come from one paired timing in this run: every
configuration (the reference included) trains --time_steps steps on the same training rows, interleaved over
--rounds rounds, so that other load on the machine falls on all of them alike; the median is scaled to an epoch.

    python bench/plateau.py --dataset fashion_mnist --bits 64     # hours on 2 cores; run again to resume
    python bench/plateau.py --dataset digits --bits 64 --folds 3  # minutes
    python bench/plateau.py ... -- --hidden 64   # flags after -- go to every configuration (as to the reference's)

A candidate that ends just short of that level still gets a time ratio at its own quality: its training time
against the reference's time to first reach the candidate's last validation mAP (the epoch the defaults keep).

Writes results/validation/plateau_<dataset>_<bits>bits.csv (one row per configuration and fold) and prints it.
"""
from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main  # noqa: E402
from convergence import read_curve, write_csv  # noqa: E402
from results import read_results, row_name  # noqa: E402

REFERENCE = "--lr 1e-4 --lr_schedule constant --warmup_epochs 0 --num_epochs 200"  # the former defaults: the study's
CONFIGS = {
    "cosine 1e-3, 20 epochs": "--lr 1e-3 --lr_schedule cosine --warmup_epochs 1 --num_epochs 20",
    "cosine 1e-3, 30 epochs": "--lr 1e-3 --lr_schedule cosine --warmup_epochs 1 --num_epochs 30",
    "cosine 3e-3, 20 epochs": "--lr 3e-3 --lr_schedule cosine --warmup_epochs 1 --num_epochs 20",
    "constant 1e-3, 30 epochs": "--lr 1e-3 --lr_schedule constant --warmup_epochs 0 --num_epochs 30",
    "cosine 3e-4, 30 epochs": "--lr 3e-4 --lr_schedule cosine --warmup_epochs 1 --num_epochs 30",
    "cosine 2e-4, 30 epochs": "--lr 2e-4 --lr_schedule cosine --warmup_epochs 1 --num_epochs 30",
    "bf16, cosine 3e-4, 30 epochs": "--precision bf16 --lr 3e-4 --lr_schedule cosine --warmup_epochs 1 "
                                    "--num_epochs 30",
    "batch 256, cosine 6e-4, 30 epochs": "--batch_size 256 --lr 6e-4 --lr_schedule cosine --warmup_epochs 1 "
                                         "--num_epochs 30",
    "no reconstruction, cosine 1e-3, 20 epochs": "--recon_weight 0 --lr 1e-3 --lr_schedule cosine --warmup_epochs 1 "
                                                 "--num_epochs 20",
}


def base_argv(dataset: str, bits: int, folds: int, log_dir: Path, flags: str) -> list[str]:
    return ["--dataset", dataset, "--split", "ref", "--folds", str(folds), "--method", "hagcn", "--task", "gcn",
            "--exp_hash_len", str(bits), "--val_every", "1", "--resume", *shlex.split(flags), "--log_dir", str(log_dir)]


def with_extra(configs: dict[str, str], extra: list[str]) -> dict[str, str]:
    """Each configuration's flags followed by the flags given after -- (they win)."""
    return {name: f"{flags} {shlex.join(extra)}".strip() for name, flags in configs.items()}


def curves(log_dir: Path, argv: list[str]) -> dict[int, tuple]:
    """{fold: (epochs, val mAP, seconds)} of the runs of `argv` in log_dir (trained first if missing)."""
    status, rows, _ = main.run(argv)
    if status != 0:
        raise SystemExit(f"error: main.py {' '.join(argv)} stopped with status {status}; run again to resume")
    return {int(r["fold"]): read_curve(log_dir / "runs" / r["run_id"]) for r in rows if row_name(r) == "hagcn-gcn"}


def seconds_per_epoch(dataset: str, bits: int, configs: dict[str, str], steps: int, rounds: int,
                      scratch: Path) -> dict[str, float]:
    """Median seconds of an epoch of fold 0's training rows under each configuration's flags, from `steps` steps
    (a subset of steps x batch rows, one epoch each) timed in turn within every round, scaled to a whole epoch."""
    parsed = {name: main.parse_args(base_argv(dataset, bits, 1, scratch, flags)) for name, flags in configs.items()}
    data, splits = main.load_data(next(iter(parsed.values())))
    split = splits[0]
    rows = main.standardised_rows(data.X, split.train)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, args in parsed.items():
            args.knn = args.knn or len(data.classes)
            n = min(steps * args.batch_size, len(split.train))
            X = rows.subset(split.train[:n])
            graph = main.global_graph(X, args, scratch / "graphs")
            torch.manual_seed(args.seed)
            model, loss_fn = main.build_hagcn("gcn", bits, X.shape[1], args)
            y = torch.from_numpy(data.y[split.train[:n]])
            t = time.perf_counter()
            main.train_from_args(model, loss_fn, X, y, args, graph, name, num_epochs=1)
            times[name].append((time.perf_counter() - t) * math.ceil(len(split.train) / args.batch_size)
                               / math.ceil(n / args.batch_size))
    return {name: statistics.median(t) for name, t in times.items()}


def matching_epoch(epochs: np.ndarray, val: np.ndarray, value: float) -> int | None:
    """The first epoch at which a curve (epochs, val) reaches `value`, or None if it never does."""
    hit = np.flatnonzero(val >= value)
    return int(epochs[hit[0]]) if len(hit) else None


def main_cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist", help="a built-in dataset")
    p.add_argument("--bits", type=int, default=64, help="code length")
    p.add_argument("--folds", type=int, default=1, help="ref folds (the reference study's: 1 on Fashion-MNIST)")
    p.add_argument("--reference", default=None,
                   help="bench/convergence.py's log folder of the reference curve (default: "
                        "results/validation/convergence/<dataset>)")
    p.add_argument("--tolerance", type=float, default=0.002, help="the plateau level: reference best minus this")
    p.add_argument("--time_steps", type=int, default=40, help="steps per configuration in the paired timing")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the paired timing")
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), default=None, help="these candidates only")
    p.add_argument("--out", default="results/validation", help="folder of the CSV and the candidates' runs")
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    out = Path(a.out)
    ref_dir = Path(a.reference or out / "convergence" / a.dataset)
    configs = with_extra({name: CONFIGS[name] for name in (a.only or CONFIGS)}, extra)
    log_dir = out / "plateau" / a.dataset
    found = {name: curves(log_dir, base_argv(a.dataset, a.bits, a.folds, log_dir, flags))
             for name, flags in configs.items()}
    ref_rows = {int(r["fold"]): r for r in read_results(ref_dir / "results.csv")
                if row_name(r) == "hagcn-gcn" and int(r["hash_len"]) == a.bits}
    if not ref_rows:
        print(f"error: --reference {ref_dir}: no HAGCN-gcn run at {a.bits} bits (run bench/convergence.py first)",
              file=sys.stderr)
        return 2
    reference = {fold: read_curve(ref_dir / "runs" / r["run_id"]) for fold, r in ref_rows.items()}
    found = {"today (constant 1e-4)": reference, **found}
    timed = {"today (constant 1e-4)": with_extra({"": REFERENCE}, extra)[""], **configs}
    per_epoch = seconds_per_epoch(a.dataset, a.bits, timed, a.time_steps, a.rounds, out / "plateau" / "timing")
    rows = []
    for fold, (ref_epochs_all, ref_val, _) in sorted(reference.items()):
        level = ref_val.max() - a.tolerance
        base_epochs = None
        for name, by_fold in found.items():
            epochs, val, _ = by_fold[fold]
            reached = matching_epoch(epochs, val, level)
            base_epochs = reached if base_epochs is None else base_epochs
            seconds = reached * per_epoch[name] if reached else None
            ratio = seconds / (base_epochs * per_epoch["today (constant 1e-4)"]) if seconds else None
            ref_epochs = matching_epoch(ref_epochs_all, ref_val, val[-1])
            ratio_at_last = (int(epochs[-1]) * per_epoch[name] / (ref_epochs * per_epoch["today (constant 1e-4)"])
                             if ref_epochs else None)
            rows.append([name, fold, f"{level:.4f}", f"{val.max():.4f}", f"{val[-1]:.4f}", int(epochs[-1]),
                         reached or "", f"{per_epoch[name]:.2f}", f"{seconds:.0f}" if seconds else "",
                         f"{ratio:.3f}" if ratio else "", ref_epochs or "",
                         f"{ratio_at_last:.3f}" if ratio_at_last else ""])
    write_csv(out / f"plateau_{a.dataset}_{a.bits}bits.csv",
              ["config", "fold", "level", "best_val", "last_val", "epochs", "epochs_to_level", "seconds_per_epoch",
               "seconds_to_level", "time_ratio", "reference_epochs_to_last_val", "time_ratio_at_last_val"], rows)
    for row in rows:
        print(" | ".join(map(str, row)))
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
