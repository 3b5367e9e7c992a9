"""Peak resident memory of evaluate_codes at Q = 10,000 queries against N = 1,000,000 random 64-bit codes
(10 classes, topk = 1000), each input form in a fresh subprocess (ru_maxrss), with the wall time.
Target: peak under 2 GiB. Run: python bench/memory.py [--quick]."""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="Q = 1,000 against N = 100,000")
    p.add_argument("--child", nargs=4, metavar=("Q", "N", "FORM", "TOPK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        n_query, n_db, form, topk = args.child
        return child(int(n_query), int(n_db), form, int(topk))
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
