"""How far HAGCN's codes can go: the mAP@200 of their similarity target itself, against the codes trained on it.

HAGCN fits its codes' inner products to S = cos of the training rows' diffusion coordinates in the global k-NN graph
(losses.similarity_target, graph.diffusion_map). Ranking training rows by that cosine, real-valued, is what codes
that matched S exactly would give: the target's ceiling. Everything runs inside the ref training part of
Fashion-MNIST (bench/batching.validation_split), never on the README's query/database splits:
  1. the target's ceiling: 5,600 training rows as queries against 5,600 other training rows (seeded), ranked by the
     cosine of the input, then of the diffusion coordinates for each --knn, --diffusion_dims and --diffusion_t;
  2. the codes: HAGCN-gcn with default flags at each code length, evaluated on the same training rows and on the
     validation query/database (5,600 each), with ITQ on the validation split as the bar.
When the codes reach the ceiling, no training knob can lift them: only a better target can.

Run: python bench/target_ceiling.py [--bits 32 64] [--knn 5 10 20] [--dims 64 128 256] [--t 4 8 16 32]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batching import validation_split  # noqa: E402
from data import load_fashion_mnist, standardise  # noqa: E402
from graph import diffusion_coordinates, exact_search, graph_low_frequencies, knn_graph, unit_rows  # noqa: E402
from graph_target import baseline_map, codes_map, trained_hagcn  # noqa: E402

TOPK = 200


def cosine_map(query: np.ndarray, db: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray,
               topk: int = TOPK) -> float:
    """mAP@topk of real-valued rows ranked by cosine (exact, faiss), with evaluate.mean_average_precision's AP: the
    sum over relevant ranks r <= topk of hits(r) / r, over the hits in the top k; queries without one skipped."""
    found = exact_search(db, unit_rows(query), topk)
    relevant = db_labels[found] == query_labels[:, None]
    hits = relevant.cumsum(axis=1)
    ap = (relevant * hits / np.arange(1, topk + 1)).sum(axis=1)
    counted = hits[:, -1] > 0
    return float((ap[counted] / hits[counted, -1]).mean())


def training_pairs(n: int, size: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint seeded sets of `size` training rows: queries and database."""
    rows = np.random.default_rng(seed).permutation(n)
    return rows[:size], rows[size:2 * size]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, nargs="*", default=[32, 64], help="code lengths of the trained HAGCN")
    p.add_argument("--knn", type=int, nargs="+", default=[5, 10, 20], help="k of the graph the diffusion map is of")
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128, 256], help="diffusion coordinates (at --knn 10)")
    p.add_argument("--t", type=float, nargs="+", default=[4, 8, 16, 32], help="diffusion times")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--cache", default="logs/bench_graph_target", help="where the global graphs are cached")
    a = p.parse_args(argv)
    data = load_fashion_mnist()
    split = validation_split(data.y)
    X = standardise(data.X, split.train)
    Xtr, ytr = X[split.train], data.y[split.train]
    q, d = training_pairs(len(split.train), len(split.query))
    print(f"training rows {len(split.train)}; ceiling: {len(q)} training queries vs {len(d)} other training rows; "
          f"codes also on the validation split ({len(split.query)} / {len(split.db)}); mAP@{TOPK}", flush=True)
    print(f"{'input cosine':<44}{cosine_map(Xtr[q], Xtr[d], ytr[q], ytr[d]):>9.4f}", flush=True)
    t0 = time.perf_counter()
    neighbours = knn_graph(Xtr, max(a.knn + [10]))
    print(f"{'global graph':<44}{'':>9}   ({time.perf_counter() - t0:.0f} s)", flush=True)
    settings = [(k, 64) for k in a.knn] + [(10, dims) for dims in a.dims if dims != 64]
    print(f"{'diffusion target (knn, dims) / t':<44}" + "".join(f"{f't {t:g}':>9}" for t in a.t), flush=True)
    for k, dims in dict.fromkeys(settings):
        t0 = time.perf_counter()
        lam, u = graph_low_frequencies(neighbours[:, :k], dims)
        cells = [cosine_map(c[q], c[d], ytr[q], ytr[d]) for c in (diffusion_coordinates(lam, u, t) for t in a.t)]
        print(f"{f'knn {k}, dims {dims}':<44}" + "".join(f"{m:>9.4f}" for m in cells)
              + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    for bits in a.bits:
        itq = baseline_map("itq", bits, X, data.y, split)
        t0 = time.perf_counter()
        model = trained_hagcn("", bits, a.epochs, X, data.y, split, Path(a.cache))
        on_training = codes_map(model, X, data.y, split.train[q], split.train[d])
        on_validation = codes_map(model, X, data.y, split.query, split.db)
        print(f"hagcn-gcn {bits} bits: training rows {on_training:.4f}, validation {on_validation:.4f}; "
              f"ITQ validation {itq:.4f}   ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
