"""Shuffled vs neighbourhood batches (--batch_group), chosen without the query/database splits.

The ref protocol is applied again inside the ref training part of Fashion-MNIST (80/10/10 of its 56,000 rows),
so the query/database splits of the README's tables are never seen. A hash head (linear, the paper's H = X W2,
or the MLP on X) is trained by HAGCN's similarity term alone, mean((Ps Ps^T / L - S)^2) with S the batch k-NN
graph (graph.batch_graph), on batches from train.epoch_batches; mAP@200 on the validation query/database.
This isolates what the batches change: the graph the codes are fitted to.

Run: python bench/batching.py [--epochs 10] [--bits 32 64] [--lr 1e-3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import Split, load_fashion_mnist, make_splits, standardise  # noqa: E402
from evaluate import mean_average_precision  # noqa: E402
from graph import batch_graph, knn_graph  # noqa: E402
from model import mlp  # noqa: E402
from train import epoch_batches  # noqa: E402


def validation_split(y, seed: int = 0) -> Split:
    """The ref split of the ref training part: rows of the full set, query/database inside the training part."""
    outer = make_splits(y, "ref", 1, seed)[0]
    inner = make_splits(y[outer.train], "ref", 1, seed)[0]
    return Split(outer.train[inner.train], outer.train[inner.query], outer.train[inner.db])


def fit_head(X, bits, head, neighbours, group, epochs, lr, knn=10, batch=128, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Linear(X.shape[1], bits) if head == "linear" else mlp(X.shape[1], 768, bits)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        alpha = 10 ** (epoch / max(epochs - 1, 1))  # HAGCN's schedule: 1 -> 10
        for idx in epoch_batches(len(X), batch, gen, neighbours, group):
            xb = X[idx]
            s = (batch_graph(xb, knn).a_hat > 0).float()
            ps = 2 * torch.sigmoid(alpha * net(xb)) - 1
            loss = ((ps @ ps.T / bits - s) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--bits", type=int, nargs="+", default=[32, 64])
    p.add_argument("--lr", type=float, default=1e-3, help="for the linear head (the MLP head uses lr / 10)")
    p.add_argument("--n_train", type=int, default=None, help="fewer training rows, for a quick run")
    a = p.parse_args(argv)
    data = load_fashion_mnist()
    split = validation_split(data.y)
    if a.n_train:
        split = Split(split.train[:a.n_train], split.query, split.db)
    Xs = torch.from_numpy(standardise(data.X, split.train))
    X = Xs[torch.from_numpy(split.train)]
    t = time.perf_counter()
    pool = torch.from_numpy(knn_graph(X.numpy(), 50))
    print(f"validation split: train {len(split.train)}, query {len(split.query)}, database {len(split.db)}; "
          f"neighbour pool {time.perf_counter() - t:.0f} s")
    q, db = Xs[torch.from_numpy(split.query)], Xs[torch.from_numpy(split.db)]
    print(f"{'head':<8}{'batches':<16}" + "".join(f"{b:>8} bits" for b in a.bits))
    for head in ("linear", "mlp"):
        for name, neighbours, group in (("shuffled", None, 1), ("neighbourhood 8", pool, 8)):
            cells = []
            for bits in a.bits:
                net = fit_head(X, bits, head, neighbours, group, a.epochs, a.lr if head == "linear" else a.lr / 10)
                with torch.no_grad():
                    cells.append(mean_average_precision((net(q) > 0).numpy(), (net(db) > 0).numpy(),
                                                        data.y[split.query], data.y[split.db], 200))
            print(f"{head:<8}{name:<16}" + "".join(f"{m:>13.4f}" for m in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
