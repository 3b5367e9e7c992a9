"""Speed of evaluate.py: (1) mAP@200 against the paper repo's per-query loop at Q = N = 7,000, 32 bits, 10 classes,
and the tie-aware mAP@200 (ties="expected") beside the stable one;
(2) hamming_topk against faiss IndexBinaryFlat at Q = 1,000, N = 1,000,000, 64 bits, k = 100.
(3) the stable order of tied items against the tie-aware mAP on digits (LSH, ITQ; ITQ over random database orders).
Run: python bench/eval.py [--quick] [--reps 5]. Medians over repetitions; numba is warmed up before timing."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import baselines  # noqa: E402
from data import load_dataset, make_splits, standardise  # noqa: E402
from evaluate import hamming_topk, mean_average_precision, pack  # noqa: E402


def median_seconds(fn, reps: int) -> tuple[float, object]:
    """(median wall time over reps calls, result of the last call)."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def paper_repo_map(q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                   topk: int) -> float:
    """The paper repo's loop on {-1,+1} codes: per query, Hamming distance 0.5 * (L - <b, B>), argsort (stable here,
    so ties match), label-equality relevance, AP over the top k; queries without a hit skipped."""
    n_bits = q_codes.shape[1]
    aps = []
    for i in range(len(q_codes)):
        hamm = 0.5 * (n_bits - db_codes @ q_codes[i])
        order = np.argsort(hamm, kind="stable")[:topk]
        rel = (db_labels[order] == q_labels[i]).astype(float)
        n_rel = rel.sum()
        if n_rel == 0:
            continue
        aps.append(np.mean(np.cumsum(rel)[rel > 0] / (np.flatnonzero(rel) + 1.0)))
    return float(np.mean(aps))


def bench_map(n: int, reps: int, loop_reps: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    q = np.where(rng.integers(0, 2, (n, 32)) > 0, 1.0, -1.0)
    db = np.where(rng.integers(0, 2, (n, 32)) > 0, 1.0, -1.0)
    ql, dl = rng.integers(0, 10, n), rng.integers(0, 10, n)
    mean_average_precision(q[:10], db[:100], ql[:10], dl[:100], 20)  # compile / load the numba cache
    mean_average_precision(q[:10], db[:100], ql[:10], dl[:100], 20, ties="expected")
    ours_s, ours = median_seconds(lambda: mean_average_precision(q, db, ql, dl, 200), reps)
    tied_s, tied = median_seconds(lambda: mean_average_precision(q, db, ql, dl, 200, ties="expected"), reps)
    loop_s, loop = median_seconds(lambda: paper_repo_map(q, db, ql, dl, 200), loop_reps)
    return [(f"mAP@200  Q=N={n}, 32 bits: evaluate.mean_average_precision", f"{ours_s * 1e3:9.1f} ms"),
            ("  paper-repo per-query loop (stable argsort)", f"{loop_s * 1e3:9.1f} ms"),
            ("  speed-up", f"{loop_s / ours_s:9.0f} x"),
            ("  |mAP difference|", f"{abs(ours - loop):9.1e}  (mAP {ours:.6f})"),
            ("  ties='expected' (tie-aware, exact)", f"{tied_s * 1e3:9.1f} ms  (mAP {tied:.6f})"),
            ("  tie-aware / stable time", f"{tied_s / ours_s:9.2f}")]


def lowest_index_among_ties(idx: np.ndarray, dist: np.ndarray, q_bits: np.ndarray, db_bits: np.ndarray) -> bool:
    """True when, for each query, the items kept at the k-th distance are the lowest-indexed items at that distance
    (checked on a sample of queries with a brute-force distance row)."""
    for i in range(0, len(idx), max(1, len(idx) // 20)):
        row = (np.unpackbits(q_bits[i][None] ^ db_bits, axis=1)).sum(1)
        kth = dist[i, -1]
        kept = np.sort(idx[i][dist[i] == kth])
        if not np.array_equal(kept, np.flatnonzero(row == kth)[:len(kept)]):
            return False
    return True


def bench_topk(n_query: int, n_db: int, k: int, reps: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(1)
    q_bytes = rng.integers(0, 256, (n_query, 8), dtype=np.uint8)  # 64-bit codes, np.packbits layout
    db_bytes = rng.integers(0, 256, (n_db, 8), dtype=np.uint8)
    q, db = pack(np.unpackbits(q_bytes, axis=1).astype(bool)), pack(np.unpackbits(db_bytes, axis=1).astype(bool))
    hamming_topk(q, db, k)  # warm up
    ours_s, (idx, dist) = median_seconds(lambda: hamming_topk(q, db, k), reps)
    rows = [(f"top-{k}  Q={n_query}, N={n_db}, 64 bits: evaluate.hamming_topk", f"{ours_s * 1e3:9.1f} ms")]
    try:
        import faiss
    except ImportError:
        return rows + [("  faiss IndexBinaryFlat", "faiss not installed: skipped")]
    faiss.omp_set_num_threads(numba.get_num_threads())
    index = faiss.IndexBinaryFlat(64)
    index.add(db_bytes)
    index.search(q_bytes[:10], k)
    faiss_s, (f_dist, f_idx) = median_seconds(lambda: index.search(q_bytes, k), reps)
    same_distances = np.array_equal(np.sort(f_dist, axis=1), dist)
    same_sets_below_kth = all(set(idx[i][dist[i] < dist[i, -1]]) == set(f_idx[i][f_dist[i] < f_dist[i].max()])
                              for i in range(n_query))
    return rows + [("  faiss IndexBinaryFlat.search", f"{faiss_s * 1e3:9.1f} ms"),
                   ("  ours / faiss time", f"{ours_s / faiss_s:9.2f}"),
                   ("  distances identical to faiss", f"{same_distances}"),
                   ("  same items below the k-th distance", f"{same_sets_below_kth}"),
                   ("  ties at the k-th distance: lowest indices",
                    f"{lowest_index_among_ties(idx, dist, q_bytes, db_bytes)}")]


def bench_ties(orders: int = 50) -> list[tuple[str, str]]:
    """What the order of equally distant items does to mAP@200 on digits (the default split, seed 0): the stable
    order (ties to the lower database index) against the tie-aware expectation, for LSH and ITQ as main.py fits
    them, and ITQ's 16-bit stable mAP over `orders` seeded random orders of the database and the class-sorted one."""
    data = load_dataset("digits")
    split = make_splits(data.y, "ref", 1, 0)[0]
    X = standardise(data.X, split.train)
    ql, dl = data.y[split.query], data.y[split.db]
    rows, codes = [], {}
    for name, bits in [("lsh", 16), ("itq", 16), ("itq", 32)]:
        coder = baselines.CLOSED_FORM[name]().fit(X[split.train], bits, 0)
        q, db = codes[name, bits] = coder.encode(X[split.query]), coder.encode(X[split.db])
        stable, expected = (mean_average_precision(q, db, ql, dl, 200, ties=t) for t in ("index", "expected"))
        rows.append((f"digits {name} {bits} bits mAP@200: stable order / tie-aware", f"{stable:.4f} / {expected:.4f}"))
    q, db = codes["itq", 16]
    rng = np.random.default_rng(0)
    shuffled = [mean_average_precision(q, db[p], ql, dl[p], 200, ties="index")
                for p in (rng.permutation(len(dl)) for _ in range(orders))]
    by_class = np.argsort(dl, kind="stable")
    return rows + [(f"  itq 16 bits, stable order over {orders} random database orders",
                    f"{min(shuffled):.4f} - {max(shuffled):.4f}"),
                   ("  itq 16 bits, stable order, database sorted by class",
                    f"{mean_average_precision(q, db[by_class], ql, dl[by_class], 200, ties='index'):.4f}")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller sizes (Q=N=2,000; Q=200 vs N=200,000)")
    p.add_argument("--reps", type=int, default=5, help="repetitions of the fast calls (median reported)")
    p.add_argument("--loop_reps", type=int, default=2, help="repetitions of the slow per-query loop")
    args = p.parse_args()
    n = 2_000 if args.quick else 7_000
    n_query, n_db = (200, 200_000) if args.quick else (1_000, 1_000_000)
    print(f"numba threads: {numba.get_num_threads()}", flush=True)
    rows = bench_map(n, args.reps, args.loop_reps) + bench_topk(n_query, n_db, 100, args.reps) + bench_ties()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
