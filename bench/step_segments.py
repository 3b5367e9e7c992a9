"""Where does the time of one training step go, per HAGCN filter and deep baseline?

Section 2 of the training-speed benchmarks (the setting: bench/common.py): one training step split into data
indexing, graph building (graph.batch_graph), spectrum (BatchGraph.spectrum or graph.lanczos), filter forward, the
rest of the forward + loss, and backward + optimiser step; medians over --profile_steps steps
(torch.cuda.synchronize at every boundary on cuda). HAGCN's forward is unrolled, and first checked against
model.forward.

Run: python bench/step_segments.py [--profile_steps 50] [--methods gcn shc ...] [--threads 1] [--n_train N]
                                   [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import graph as graph_mod  # noqa: E402
from common import BATCH, GRAPH_CACHE, build, check_device, is_hagcn, med, method_args, sync_fn, table  # noqa: E402
from losses import total  # noqa: E402
from main import global_graph  # noqa: E402

SEGMENTS = ["data", "graph", "spectrum", "filter", "rest fwd+loss", "bwd+opt"]


@contextlib.contextmanager
def reuse_lanczos(cache: dict):
    """graph.lanczos answers from `cache` for the Laplacian it was computed on (so the filter forward is timed
    without the Lanczos iterations, timed separately); restored on exit."""
    original = graph_mod.lanczos

    def cached(lap, steps, *a, **kw):
        if cache.get("lap") is lap and cache.get("steps") == steps:
            return cache["out"]
        return original(lap, steps, *a, **kw)

    graph_mod.lanczos = cached
    try:
        yield
    finally:
        graph_mod.lanczos = original


def hagcn_step(model, loss_fn, opt, X, y, idx, timer, cache, device, check, backward=True, coords=None):
    """One step of train.train for a HAGCN model with HAGCN.forward unrolled (same tensors, same order); `coords`:
    the training rows' diffusion coordinates (main.global_graph), which the default batch graph and target use."""
    timer("start")
    xb, yb = X[idx], y[idx]
    cb = None if coords is None else coords[idx]
    timer("data")
    z1 = model.encoder(xb)
    h = model.head(xb if model.hash_head == "linear" else z1)
    probs = torch.sigmoid(model.alpha * h)
    timer("rest fwd+loss")
    g = graph_mod.batch_graph(cb if cb is not None else xb if model.graph_source == "input" else z1, model.knn)
    timer("graph")
    spec = None
    if isinstance(model.filter, (graph_mod.FourierFilter, graph_mod.SplineFilter)):
        spec = g.spectrum()
    elif isinstance(model.filter, graph_mod.LanczosFilter):
        spec = graph_mod.lanczos(g.lap, model.filter.order)
        cache.update(lap=g.lap, steps=model.filter.order, out=spec)
    timer("spectrum")
    z3 = model.filter(z1, g)
    timer("filter")
    out = {"z1": z1, "logits": h, "probs": probs, "recon": model.decoder(z3), "a_hat": g.a_hat, "coords": cb}
    loss = total(loss_fn(out, xb, yb))
    if not torch.isfinite(loss):
        raise RuntimeError("loss is not finite")
    timer("rest fwd+loss")
    if not backward:
        return loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    timer("bwd+opt")
    if check:
        check_device(device, "step tensors", [xb, yb, z1, h, probs, g.a_hat, g.lap, z3, loss], out, model,
                     *(spec or ()), [p.grad for p in model.parameters() if p.grad is not None])
    return loss


def plain_step(model, loss_fn, opt, X, y, idx, timer, cache, device, check, coords=None):
    timer("start")
    xb, yb = X[idx], y[idx]
    timer("data")
    out = model(xb)
    loss = total(loss_fn(out, xb, yb))
    if not torch.isfinite(loss):
        raise RuntimeError("loss is not finite")
    timer("rest fwd+loss")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    timer("bwd+opt")
    if check:
        check_device(device, "step tensors", [xb, yb, loss], out, model)
    return loss


def profile_steps(method, X, y, n_classes, args, device, n_steps, warmup=5, opt_kwargs=None) \
        -> tuple[dict[str, float], float]:
    """{segment: median ms}, median total ms; the unrolled forward is first checked against model.forward."""
    coords = global_graph(X.cpu().numpy(), method_args(method, args), GRAPH_CACHE).coords if is_hagcn(method) else None
    coords = None if coords is None else coords.to(device)
    model, loss_fn = build(method, X.shape[1], n_classes, args)
    model.to(device)
    model.prepare(X[:4096], y[:4096])
    model.train()
    model.set_epoch(0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, **(opt_kwargs or {}))
    step = hagcn_step if is_hagcn(method) else plain_step
    sync = sync_fn(device)
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.cat([torch.randperm(len(X), generator=gen) for _ in range(math.ceil((n_steps + warmup + 1) * BATCH
                                                                                      / len(X)))])
    batches = order.to(device).split(BATCH)
    cache: dict = {}
    if is_hagcn(method):  # the unrolled forward must compute what model.forward computes
        with torch.no_grad():
            xb, yb = X[batches[0]], y[batches[0]]
            ref = total(loss_fn(model(xb, coords=None if coords is None else coords[batches[0]]), xb, yb))
            unrolled = hagcn_step(model, loss_fn, None, X, y, batches[0], lambda s: None, cache, device, False,
                                  backward=False, coords=coords)
            if not torch.allclose(ref, unrolled, rtol=1e-5, atol=1e-6):
                raise AssertionError(f"{method}: unrolled step loss {float(unrolled)} != model.forward {float(ref)}")
    seg = {s: [] for s in SEGMENTS}
    totals = []
    with reuse_lanczos(cache):
        for i, idx in enumerate(batches[1:n_steps + warmup + 1]):
            marks = []

            def timer(name):
                sync()
                marks.append((name, time.perf_counter()))

            step(model, loss_fn, opt, X, y, idx, timer, cache, device, check=(i == 0), coords=coords)
            if i < warmup:
                continue
            per = dict.fromkeys(SEGMENTS, 0.0)
            for (_, t0), (name, t1) in zip(marks, marks[1:]):
                per[name] += t1 - t0
            for s in SEGMENTS:
                seg[s].append(per[s] * 1e3)
            totals.append((marks[-1][1] - marks[0][1]) * 1e3)
    return {s: med(v) for s, v in seg.items()}, med(totals)


def segment_table(b: common.Bench, methods: list[str], n_steps: int) -> None:
    """Section 2: each method's segment medians, their sum and the median whole step."""
    common.log(f"\n[2] one training step split into segments (median ms over {n_steps} steps)")
    rows = []
    for m in methods:
        seg, step_ms = profile_steps(m, b.X, b.y, b.n_classes, b.args, b.device, n_steps)
        graphy = is_hagcn(m)
        cells = [m] + [f"{seg[s]:.2f}" if graphy or s not in ("graph", "spectrum", "filter") else "-"
                       for s in SEGMENTS]
        rows.append(cells + [f"{sum(seg.values()):.1f}", f"{step_ms:.1f}"])
    common.log(table(["method"] + SEGMENTS + ["sum", "total"], rows,
                     f"Step segments on {b.device} (ms; 'sum' = sum of segment medians, 'total' = median step)"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__)
    common.add_methods(p)
    p.add_argument("--profile_steps", type=int, default=50, help="steps per method")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    b = common.setup(a)
    if b is None:
        return 2
    methods, note = common.methods(a.methods)
    common.header(b, note)
    segment_table(b, methods, a.profile_steps)
    common.footer(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
