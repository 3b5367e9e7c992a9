"""Peak resident memory (ru_maxrss, each measurement in a fresh subprocess), two modes.

    python bench/memory.py [--quick]             evaluate_codes: Q = 10,000 queries against N = 1,000,000 random
                                                 64-bit codes (10 classes, topk = 1000). Target: peak under 2 GiB.
    python bench/memory.py --run [--rows N]      a whole `main.py` run (HAGCN, gcn filter, 64 bits, 1 epoch, one
                                                 fold, default graph settings) on N x 768 float16 embeddings packed
                                                 as a memory map (data.write_pack), N = 1,000,000 by default.
                                                 Target: peak under 4 GiB.

The --run embeddings are SYNTHETIC (there is no real set of a million embeddings offline): a seeded Gaussian mixture
of 10 classes, centres N(0, 0.5^2 I), each row its centre plus N(0, I) noise, generated chunk by chunk straight into
logs/bench-memory/synthetic-NxD (never whole in RAM; kept and reused by later runs). main.py runs in a subprocess
whose resident memory and CPU time are sampled from /proc every half second; its stderr marks the phases (data,
statistics and global graph; training; encoding and evaluation).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(n_query: int, n_db: int, form: str, topk: int) -> None:
    """Build the inputs, then run evaluate_codes once (numba loads from its cache or compiles first, outside the
    measured call: a tiny call warms it up) and print the peak RSS before and after as JSON."""
    import evaluate
    rng = np.random.default_rng(0)
    q_bytes = rng.integers(0, 256, (n_query, 8), dtype=np.uint8)
    db_bytes = rng.integers(0, 256, (n_db, 8), dtype=np.uint8)
    if form == "packed":
        q, db = evaluate.from_packbits(q_bytes, 64), evaluate.from_packbits(db_bytes, 64)
    else:  # {0,1} int8, one byte per bit, as a model's codes usually arrive
        q, db = np.unpackbits(q_bytes, axis=1).astype(np.int8), np.unpackbits(db_bytes, axis=1).astype(np.int8)
    q_labels, db_labels = rng.integers(0, 10, n_query), rng.integers(0, 10, n_db)
    small = np.unpackbits(db_bytes[:100], axis=1)
    evaluate.evaluate_codes(evaluate.pack(small[:2]), evaluate.pack(small), db_labels[:2], db_labels[:100], 10)
    evaluate.evaluate_codes(small[:2].astype(np.int8), small.astype(np.int8), db_labels[:2], db_labels[:100], 10)
    before = peak_rss_mib()
    t = time.perf_counter()
    metrics = evaluate.evaluate_codes(q, db, q_labels, db_labels, topk)
    seconds = time.perf_counter() - t
    print(json.dumps({"before_mib": before, "peak_mib": peak_rss_mib(), "seconds": seconds, "map": metrics["map"]}))


# ----------------------------------------------------------------------------- a whole run on a packed memory map

CLASSES, CHUNK, SEED = 10, 16_384, 0


def synthetic_pack(rows: int, dim: int) -> Path:
    """The packed synthetic mixture (see the module docstring), written once in chunks of CHUNK rows."""
    import data
    out = REPO / "logs" / "bench-memory" / f"synthetic-{rows}x{dim}"
    if data.is_packed(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    centres = np.random.default_rng(SEED).normal(0.0, 0.5, (CLASSES, dim)).astype(np.float32)

    def chunks():
        for start in range(0, rows, CHUNK):
            rng = np.random.default_rng([SEED, start])
            m = min(CHUNK, rows - start)
            y = rng.integers(0, CLASSES, m)
            yield (centres[y] + rng.standard_normal((m, dim), np.float32)), y, \
                [f"synthetic/{i}" for i in range(start, start + m)]

    t = time.perf_counter()
    data.write_pack(out, (rows, dim), "float16", "synthetic", [str(c) for c in range(CLASSES)], chunks())
    print(f"generated {out.relative_to(REPO)} ({rows * dim * 2 / 2**30:.2f} GiB float16) in "
          f"{time.perf_counter() - t:.0f} s")
    return out


def proc_sample(pid: int) -> tuple[float, float] | None:
    """(resident MiB, CPU seconds) of a running process, from /proc; None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
    return rss, (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def run_main(pack: Path, rows: int) -> None:
    """main.py on the packed folder in a subprocess; prints its peak RSS (ru_maxrss) and each phase's wall time,
    CPU time and largest sampled RSS."""
    log_dir = REPO / "logs" / "bench-memory" / f"run-{rows}"
    shutil.rmtree(log_dir, ignore_errors=True)  # no cached global graph: the run builds it
    cmd = [sys.executable, "main.py", "--root_dir", str(pack), "--method", "hagcn", "--task", "gcn",
           "--exp_hash_len", "64", "--num_epochs", "1", "--folds", "1", "--device", "cpu", "--log_dir", str(log_dir),
           "--force"]
    print("$ python " + " ".join(cmd[1:]).replace(str(REPO) + os.sep, ""))
    print(f"load before: {os.getloadavg()[0]:.2f} (1-minute average; other jobs share these {os.cpu_count()} cores)")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    samples, marks = [], []  # (seconds, MiB, CPU seconds); (seconds, stderr line)

    def sample():
        while (s := proc_sample(proc.pid)) is not None and proc.poll() is None:
            samples.append((time.perf_counter() - t0, *s))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stderr:
        marks.append((time.perf_counter() - t0, line.rstrip()))
    proc.wait()
    sampler.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"main.py failed ({proc.returncode}):\n" + "\n".join(m for _, m in marks[-5:]))
    ends = [next(t for t, m in marks if "global graph of" in m), next(t for t, m in marks if "mAP@" in m), wall]
    names = ["data, statistics, global graph", "training (1 epoch) + encoding + evaluation", "results, exit"]
    print("\n".join(m for _, m in marks if "global graph of" in m or "mAP@" in m))
    print(f"{'phase':<46}{'wall':>8}{'CPU':>8}{'max RSS':>11}")
    start = 0.0
    for name, end in zip(names, ends):
        inside = [s for s in samples if start <= s[0] <= end] or samples[-1:]
        cpu = max(s[2] for s in inside) - min(s[2] for s in inside)
        print(f"{name:<46}{end - start:>7.0f}s{cpu:>7.0f}s{max(s[1] for s in inside):>7.0f} MiB")
        start = end
    print(f"whole run: wall {wall:.0f} s, CPU {usage.ru_utime + usage.ru_stime:.0f} s, "
          f"peak RSS (ru_maxrss) {usage.ru_maxrss / 1024:.0f} MiB; target < 4096 MiB; load after "
          f"{os.getloadavg()[0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="evaluate_codes: Q = 1,000 against N = 100,000")
    p.add_argument("--run", action="store_true", help="a whole main.py run on packed synthetic embeddings")
    p.add_argument("--rows", type=int, default=1_000_000, help="--run: rows of the synthetic set (default 1M)")
    p.add_argument("--dim", type=int, default=768, help="--run: dimension of the synthetic set")
    p.add_argument("--child", nargs=4, metavar=("Q", "N", "FORM", "TOPK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        n_query, n_db, form, topk = args.child
        return child(int(n_query), int(n_db), form, int(topk))
    if args.run:
        return run_main(synthetic_pack(args.rows, args.dim), args.rows)
    n_query, n_db, topk = (1_000, 100_000, 1000) if args.quick else (10_000, 1_000_000, 1000)
    print(f"evaluate_codes, Q={n_query:,} x N={n_db:,}, 64 bits, 10 classes, topk={topk}; fresh process per row")
    print(f"{'input form':<22}{'RSS before':>12}{'peak RSS':>12}{'peak - before':>15}{'wall':>10}{'mAP':>10}")
    for form in ("packed", "int8 {0,1}"):
        out = subprocess.run([sys.executable, __file__, "--child", str(n_query), str(n_db), form.split()[0],
                              str(topk)], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{form:<22}{r['before_mib']:>9.0f} MiB{r['peak_mib']:>8.0f} MiB"
              f"{r['peak_mib'] - r['before_mib']:>11.0f} MiB{r['seconds']:>9.2f}s{r['map']:>10.4f}")
    print("target: peak RSS < 2048 MiB")


if __name__ == "__main__":
    main()
