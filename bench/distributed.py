"""Seconds per training epoch of one HAGCN run in one process (`python main.py`) against N processes
(`torchrun --standalone --nproc_per_node N main.py`), same flags and global batch, each process one thread.
Epoch seconds come from the run's epochs.csv (train.train times each epoch), so the one-off global graph, the
encoding and the start-up are outside them; the wall and CPU seconds of the whole command are printed beside
them, with the load average, since this machine is shared.

    python bench/distributed.py                                  # Fashion-MNIST, 10,000-item subsample
    python bench/distributed.py --dataset digits --subsample 0 --num_epochs 10      # all 1,797 digits
    python bench/distributed.py --dataset digits --subsample 0 --num_epochs 20 --bits 16 --hidden 64 --seeds 0 1 2 3 4
                                                                 # what N processes cost in mAP, seed by seed
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished child process (torchrun's workers included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(nproc: int, flags: list[str], log_dir: Path) -> dict:
    """One run of main.py with `nproc` processes in a fresh log folder: its epoch seconds, wall, CPU and mAP."""
    shutil.rmtree(log_dir, ignore_errors=True)
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(nproc)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    cpu, load, t0 = children_cpu_seconds(), os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run([*launcher, str(REPO / "main.py"), *flags, "--log_dir", str(log_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu_seconds() - cpu
    if proc.returncode != 0:
        sys.exit(f"{nproc} process(es) failed:\n{proc.stderr[-2000:]}")
    with open(log_dir / "results.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    with open(log_dir / "runs" / row["run_id"] / "epochs.csv", newline="") as f:
        epochs = [float(r["seconds"]) for r in csv.DictReader(f)]
    return {"epoch_s": statistics.median(epochs[1:] or epochs), "wall_s": wall, "cpu_s": cpu, "map": float(row["map"]),
            "load": load}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--subsample", type=int, default=10000, help="items (0: all)")
    p.add_argument("--num_epochs", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one row per seed and process count")
    p.add_argument("--log_dir", type=Path, default=REPO / "logs" / "bench_distributed")
    a = p.parse_args()
    flags = ["--dataset", a.dataset, "--method", "hagcn", "--task", "gcn", "--exp_hash_len", str(a.bits),
             "--hidden", str(a.hidden), "--num_epochs", str(a.num_epochs), "--batch_size", str(a.batch_size)]
    flags += ["--subsample", str(a.subsample)] if a.subsample else []
    print(f"{a.dataset}, {a.subsample or 'all'} items, HAGCN-gcn {a.bits} bits, hidden {a.hidden}, global batch "
          f"{a.batch_size}, {a.num_epochs} epochs, one thread per process, {os.cpu_count()} cores")
    print(f"{'seed':>4} {'processes':>9} {'s/epoch':>8} {'speed-up':>8} {'wall s':>7} {'CPU s':>7} {'mAP':>7} "
          f"{'vs 1st':>7} {'load':>5}")
    for seed in a.seeds:
        base = None
        for n in a.nproc:
            r = run(n, [*flags, "--seed", str(seed)], a.log_dir / f"nproc{n}")
            base = base or r
            print(f"{seed:>4} {n:>9} {r['epoch_s']:>8.2f} {base['epoch_s'] / r['epoch_s']:>7.2f}x {r['wall_s']:>7.1f} "
                  f"{r['cpu_s']:>7.1f} {r['map']:>7.4f} {r['map'] - base['map']:>+7.4f} {r['load']:>5.1f}", flush=True)


if __name__ == "__main__":
    main()
