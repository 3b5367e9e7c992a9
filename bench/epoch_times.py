"""How many seconds does an epoch of training take, per HAGCN filter and deep baseline, and what does loading cost?

Sections 1 and 3 of the training-speed benchmarks (the setting: bench/common.py).
  1. seconds per epoch with the project's own loop (train.train): each method runs `--steps` steps (a training
     subset of steps x batch rows, one epoch of train.train) extrapolated to an epoch of the training split, or
     `--epochs` whole epochs with --steps 0; medians over --reps rounds, methods interleaved within a round so that
     load from other processes falls on all of them; each filter's ratio to gcn (target: <= 1.5x).
  3. data loading: X[idx] on the one big tensor against the step time, an epoch's neighbourhood batches
     (train.epoch_batches), and the one-off global graph of the training part (main.global_graph).

Run: python bench/epoch_times.py [--steps 50] [--epochs 1] [--reps 3] [--methods gcn shc ...] [--threads 1]
                                 [--n_train N] [--device cpu|cuda] [--precision fp32|bf16]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # train.train's progress bar would interleave with the tables

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
from common import BATCH, GRAPH_CACHE, build, check_device, is_hagcn, med, method_args, sync_fn, table  # noqa: E402
from main import global_graph, train_from_args  # noqa: E402
from train import epoch_batches  # noqa: E402


def bench_epochs(methods, X, y, n_classes, args, device, steps, epochs, reps, log) \
        -> tuple[dict[str, list[float]], dict[str, float], int]:
    """{method: [seconds per epoch of each round]}, plus one-off prepare() seconds (SHC's centres)."""
    steps_per_epoch = math.ceil(len(X) / BATCH)
    if steps:
        rows = min(steps * BATCH, len(X))
        Xs, ys, n_epochs, scale = X[:rows], y[:rows], 1, steps_per_epoch / math.ceil(rows / BATCH)
    else:
        Xs, ys, n_epochs, scale = X, y, epochs, 1.0 / epochs
    check_device(device, "training data", Xs, ys)
    sync = sync_fn(device)
    states, prepare_s = {}, {}
    for m in methods:  # initial weights, and prepare() once on the whole training part (outside the timing)
        model, _ = build(m, X.shape[1], n_classes, args)
        model.to(device)
        sync()
        t = time.perf_counter()
        model.prepare(X, y)
        sync()
        prepare_s[m] = time.perf_counter() - t
        states[m] = {k: v.clone() for k, v in model.state_dict().items()}

    # the global graph main.py builds once per fold, outside the timing
    graphs = {len(Xr): global_graph(Xr.cpu().numpy(), args, GRAPH_CACHE) for Xr in (Xs, X[:4 * BATCH])}

    def run_once(m, Xr, yr, ne):
        model, loss_fn = build(m, X.shape[1], n_classes, args)
        model.to(device)
        model.load_state_dict(states[m])
        model.prepare = lambda X_, y_: None  # done once above; train.train calls it before its epochs
        check_device(device, f"{m} model", model)
        sec = train_from_args(model, loss_fn, Xr, yr, method_args(m, args), graphs[len(Xr)], m, num_epochs=ne).seconds
        check_device(device, f"{m} model after training", model)
        return sec

    for m in methods:  # warm-up: allocator, MKL/cuBLAS handles, kernels
        run_once(m, X[:4 * BATCH], y[:4 * BATCH], 1)
    times = {m: [] for m in methods}
    for r in range(reps):
        for m in methods:
            times[m].append(run_once(m, Xs, ys, n_epochs) * scale)
        log(f"  round {r + 1}/{reps}: " + "  ".join(f"{m} {times[m][-1]:.1f}s" for m in methods))
    return times, prepare_s, steps_per_epoch


def bench_indexing(X, y, args, device, n=200) -> tuple[float, float, float, int]:
    """Median ms of X[idx], y[idx]; ms of one epoch's batch indices (train.epoch_batches, neighbourhood batches
    when args.batch_group > 1); seconds of the neighbour pool (once per fold); number of batches."""
    sync = sync_fn(device)
    sync()
    t = time.perf_counter()
    pool = global_graph(X.cpu().numpy(), args).neighbours[:, :args.neighbour_pool]  # built, not read from the cache
    sync()
    pool_s = time.perf_counter() - t
    t = time.perf_counter()
    batches = epoch_batches(len(X), BATCH, torch.Generator().manual_seed(0), pool, args.batch_group, device)
    sync()
    epoch_ms = (time.perf_counter() - t) * 1e3
    times = []
    for idx in batches[:n]:
        sync()
        t = time.perf_counter()
        xb, yb = X[idx], y[idx]
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    check_device(device, "indexed batch", xb, yb, idx)
    return med(times), epoch_ms, pool_s, len(batches)


def epoch_table(b: common.Bench, methods: list[str], a: argparse.Namespace) -> tuple[dict[str, list[float]], int]:
    """Section 1: the rounds, the table of seconds per epoch, the 1.5x target; ({method: seconds}, steps/epoch)."""
    log = common.log
    mode = f"{a.steps} steps x {a.reps} rounds, extrapolated" if a.steps else f"{a.epochs} epoch(s) x {a.reps} rounds"
    log(f"\n[1] seconds per epoch with train.train ({mode})")
    times, prepare_s, spe = bench_epochs(methods, b.X, b.y, b.n_classes, b.args, b.device, a.steps, a.epochs, a.reps,
                                         log)
    gcn = med(times["gcn"]) if "gcn" in times else float("nan")
    rows = []
    for m in methods:
        s = med(times[m])
        kind = "HAGCN" if is_hagcn(m) else "deep baseline"
        ratio = s / gcn
        flag = "" if not is_hagcn(m) or ratio <= 1.5 else "  > 1.5x"
        rows.append([m, kind, f"{s:.2f}", f"{min(times[m]):.2f}", f"{max(times[m]):.2f}",
                     f"{s / spe * 1e3:.1f}", f"{ratio:.2f}x{flag}"])
    log(table(["method", "kind", "s/epoch (median)", "min", "max", "ms/step", "vs gcn"], rows,
              f"Seconds per epoch ({spe} steps of {BATCH}) on {b.device}"))
    slow = [m for m in methods if is_hagcn(m) and med(times[m]) / gcn > 1.5]
    log("target (every filter within 1.5x of gcn): " + ("met" if not slow else f"NOT met by {', '.join(slow)}"))
    pre = {m: s for m, s in prepare_s.items() if s > 0.05}
    if pre:
        log("one-off prepare() before the first epoch (not in s/epoch): "
            + ", ".join(f"{m} {s:.1f}s" for m, s in pre.items()))
    return times, spe


def data_loading(b: common.Bench, times: dict[str, list[float]], spe: int) -> None:
    """Section 3: indexing a batch against section 1's gcn step, an epoch's batch indices, the neighbour pool."""
    X, args, device = b.X, b.args, b.device
    idx_ms, epoch_ms, pool_s, n_batches = bench_indexing(X, b.y, args, device)
    step_ms = med(times["gcn"]) / spe * 1e3 if "gcn" in times else float("nan")
    common.log(f"\n[3] data loading on {device}: X[idx], y[idx] for a batch of {BATCH}: {idx_ms * 1e3:.0f} us median "
               f"({idx_ms / step_ms * 100:.2f}% of a gcn step of {step_ms:.1f} ms); "
               f"an epoch's batch indices (batch_group {args.batch_group}): {epoch_ms:.2f} ms ({n_batches} batches); "
               f"neighbour pool of the {len(X)} training rows, once per fold: {pool_s:.1f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__)
    common.add_methods(p)
    common.add_precision(p)
    p.add_argument("--epochs", type=int, default=1, help="whole epochs per round when --steps 0")
    p.add_argument("--steps", type=int, default=50, help="steps per round, extrapolated to an epoch (0: whole epochs)")
    p.add_argument("--reps", type=int, default=3, help="rounds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    b = common.setup(a)
    if b is None:
        return 2
    methods, note = common.methods(a.methods)
    common.header(b, note)
    times, spe = epoch_table(b, methods, a)
    data_loading(b, times, spe)
    common.footer(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
