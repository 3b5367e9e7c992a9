"""search.py --index at N = 1,000,000 database codes of 64 bits: build time, query time per query (median of
repeats, all Q queries in one call) and recall@k for k = 10 and 100 against the exact ranking, for exact
(evaluate.hamming_topk), faiss-flat (IndexBinaryFlat), faiss-hnsw (IndexBinaryHNSW) and faiss-ivf (IndexBinaryIVF).

The codes are SYNTHETIC and structured: the signs of 64 Gaussian random projections (SimHash) of the Gaussian
mixture of bench/knn_graph.py (768 dimensions, n / 500 overlapping components, mean scale MU = 0.5), so that
nearby rows share most bits; uniform random codes would have no neighbourhoods for an approximate index to find. The queries are further rows
of the same mixture, not in the database.

Recall@k with ties: Hamming distances tie a lot at 64 bits, so a returned item counts as correct when its distance
is at most the exact k-th distance (any of the tied items at that distance is as right as another).

    python bench/search.py [--rows 1000000] [--queries 1000] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MU = 0.5  # component means' scale: more overlap than bench/knn_graph.py's 0.7 (its first setting)


def structured_codes(n: int, n_query: int, n_bits: int = 64, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Packed (database (n, n_bits / 8), queries) codes: SimHash of the bench/knn_graph.py mixture."""
    from knn_graph import mixture
    planes = np.random.default_rng([seed, 99]).normal(size=(768, n_bits)).astype(np.float32)
    packed = np.empty((n + n_query, n_bits // 8), dtype=np.uint8)
    for start, rows, _ in mixture(n + n_query, seed, mu=MU):
        packed[start:start + len(rows)] = np.packbits(rows @ planes > 0, axis=1)
    return packed[:n], packed[n:]


def tie_aware_recall(queries: np.ndarray, db: np.ndarray, indices: np.ndarray, exact_kth: np.ndarray) -> float:
    """Share of the returned items (-1: missing, wrong) whose true distance is at most the exact k-th distance."""
    dist = np.unpackbits(queries[:, None, :] ^ db[np.maximum(indices, 0)], axis=2).sum(axis=2)
    return float(((dist <= exact_kth[:, None]) & (indices >= 0)).mean())


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    """Median wall seconds of `repeats` calls after one untimed warm-up call, and the last call's result."""
    times, out = [], fn()
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    import faiss
    import numba
    import search
    from evaluate import from_packbits, hamming_topk
    numba.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    t = time.perf_counter()
    db, queries = structured_codes(a.rows, a.queries)
    print(f"N = {a.rows} synthetic 64-bit codes (SimHash of a Gaussian mixture), Q = {a.queries} queries, "
          f"{a.threads} threads, made in {time.perf_counter() - t:.0f} s; load {os.getloadavg()[0]:.2f}")
    ks = (10, 100)
    q_words = from_packbits(queries, 64)
    t = time.perf_counter()
    db_words = from_packbits(db, 64)
    build = time.perf_counter() - t
    exact = {}
    print(f"{'index':<26} {'build s':>8} {'ms/query':>9} {'recall@10':>9} {'ms/query':>9} {'recall@100':>10}  "
          f"(query time at k = 10, k = 100; load; CPU s of the queries)")

    def report(name: str, build_s: float, search_fn) -> None:
        cells, cpu0 = [], cpu_seconds()
        for k in ks:
            seconds, (indices, _) = median_seconds(lambda: search_fn(k), a.repeats)
            cells += [f"{seconds / a.queries * 1e3:9.3f}", f"{tie_aware_recall(queries, db, indices, exact[k]):9.4f}"]
        print(f"{name:<26} {build_s:8.1f} {cells[0]} {cells[1]} {cells[2]} {cells[3]:>10}  "
              f"load {os.getloadavg()[0]:.2f}, CPU {cpu_seconds() - cpu0:.1f} s", flush=True)

    for k in ks:
        exact[k] = hamming_topk(q_words, db_words, k)[1][:, -1]
    report("exact (hamming_topk)", build, lambda k: hamming_topk(q_words, db_words, k))

    def built(kind: str, **options):
        t = time.perf_counter()
        index = search.binary_index(db, 64, kind, **options)
        return index, time.perf_counter() - t

    index, build = built("faiss-flat")
    report("faiss-flat", build, lambda k: search.nearest(index, queries, k))
    index, build = built("faiss-hnsw")
    for ef in sorted({64, 128, search.HNSW_EF_SEARCH}):
        index.hnsw.efSearch = ef
        report(f"faiss-hnsw M={search.HNSW_M} ef={ef}", build, lambda k: search.nearest(index, queries, k))
        build = 0.0
    index, build = built("faiss-ivf")
    default = index.nprobe
    for nprobe in sorted({max(1, default // 2), default, 2 * default, 4 * default}):
        index.nprobe = nprobe
        report(f"faiss-ivf {index.nlist} lists, nprobe {nprobe}", build, lambda k: search.nearest(index, queries, k))
        build = 0.0


if __name__ == "__main__":
    main()
