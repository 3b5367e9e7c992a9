"""Training speed of HAGCN's five filters and the deep baselines on Fashion-MNIST (784-d pixels, standardised on the
ref split's training part), batch 128, hidden 768, K = 4, 32 bits, knn 10, the project's default loss and head.

  1. seconds per epoch with the project's own loop (train.train): each method runs `--steps` steps (a training
     subset of steps x batch rows, one epoch of train.train) extrapolated to an epoch of the training split, or
     `--epochs` whole epochs with --steps 0; medians over --reps rounds, methods interleaved within a round so that
     load from other processes falls on all of them; each filter's ratio to gcn (target: <= 1.5x).
  2. one training step split into data indexing, graph building (graph.batch_graph), spectrum (BatchGraph.spectrum
     or graph.lanczos), filter forward, the rest of the forward + loss, and backward + optimiser step; medians over
     --profile_steps steps (torch.cuda.synchronize at every boundary on cuda).
  3. data loading: X[idx] on the one big tensor against the step time, an epoch's neighbourhood batches
     (train.epoch_batches), and the one-off global graph of the training part (main.global_graph).
  0. first, the project's loop against a plain PyTorch loop of the same shape: `--ratio_steps` steps of train.train
     (default HAGCN-gcn run) against as many steps of PlainNet (the same layers without the graph, a plain MSE,
     torch.optim.Adam defaults), interleaved over `--ratio_rounds` rounds (target: ratio <= 0.7); a step's GFLOP
     (torch.utils.flop_counter) and the GFLOP/s achieved against the peak of a large matmul measured in the same run.
     With --candidates: each speed candidate (Adam for-loop / foreach / fused, torch.compile, bf16 autocast) at
     each --threads count, interleaved step by step with the plain loop. --only_ratio stops after this section.
  --extras adds ablations: eigh / Lanczos / graph cost against the batch size, 1 vs 2 threads, Adam foreach vs fused.

Run: python bench/train.py [--epochs 1] [--steps 50] [--device cpu|cuda] [--n_train N] [--reps 3] [--extras]
                           [--only_ratio] [--candidates] [--threads 1 2] [--precision fp32|bf16]
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # train.train's progress bar would interleave with the tables

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import baselines  # noqa: E402
import graph as graph_mod  # noqa: E402
from arguments import FILTER_NAMES, build_parser  # noqa: E402
from data import load_fashion_mnist, make_splits, standardise  # noqa: E402
from losses import total  # noqa: E402
from main import build_hagcn, global_graph, train_from_args  # noqa: E402
from train import epoch_batches  # noqa: E402

DEEP_BASELINES = ["bihalf", "dsh", "hashnet", "shc"]
BITS, HIDDEN, ORDER, KNN, BATCH = 32, 768, 4, 10, 128
PAPER_GRAPH = "gcn-batchgraph"  # gcn on the paper's batch k-NN graph with its k-NN target (before the global graph)
GRAPH_CACHE = Path("logs/bench_graphs")  # main.global_graph's cache: the one-off graph is built once per row set


# ----------------------------------------------------------------------------- helpers

def sync_fn(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def on_device(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type and (device.index is None or t.device.index == device.index)


def check_device(device: torch.device, where: str, *objs) -> None:
    """Every tensor (and every parameter/buffer of every module, every tensor value of a dict) is on `device`."""
    bad = []
    for obj in objs:
        if isinstance(obj, nn.Module):
            items = list(obj.named_parameters()) + list(obj.named_buffers())
        elif isinstance(obj, dict):
            items = [(k, v) for k, v in obj.items() if isinstance(v, torch.Tensor)]
        elif isinstance(obj, (tuple, list)):
            items = [(str(i), v) for i, v in enumerate(obj) if isinstance(v, torch.Tensor)]
        else:
            items = [("tensor", obj)]
        bad += [f"{name} on {t.device}" for name, t in items if not on_device(t, device)]
    if bad:
        raise AssertionError(f"{where}: not on {device}: {', '.join(bad[:5])}")


def med(xs) -> float:
    return float(np.median(xs)) if len(xs) else float("nan")


def table(headers: list[str], rows: list[list[str]], title: str) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(line(headers))
    return "\n".join([title, rule, line(headers), rule, *map(line, rows), rule])


def project_args(seed: int) -> argparse.Namespace:
    """The CLI's defaults (head, loss, alpha, lr, ...), with this benchmark's fixed sizes."""
    args = build_parser().parse_args([])
    args.hidden, args.k, args.knn, args.batch_size, args.seed = HIDDEN, ORDER, KNN, BATCH, seed
    args.num_epochs = 50  # the Fashion-MNIST default (parse_args resolves None by dataset)
    return args


def is_hagcn(method: str) -> bool:
    return method in FILTER_NAMES or method == PAPER_GRAPH


def method_args(method: str, args: argparse.Namespace) -> argparse.Namespace:
    """The CLI's arguments for `method`: PAPER_GRAPH is gcn with --graph_edges batch --sim_target knn."""
    return argparse.Namespace(**{**vars(args), "graph_edges": "batch", "sim_target": "knn"}) if method == PAPER_GRAPH \
        else args


def build(method: str, d_in: int, n_classes: int, args):
    """(model, loss_fn) exactly as main.fit_and_encode builds them; method 'gcn'.. for HAGCN filters."""
    torch.manual_seed(args.seed)
    if method == PAPER_GRAPH:
        return build_hagcn("gcn", BITS, d_in, method_args(method, args))
    if method in FILTER_NAMES:
        return build_hagcn(method, BITS, d_in, args)
    return baselines.build_deep(method, d_in, BITS, n_classes, args)


def available_baselines() -> tuple[list[str], str | None]:
    if not hasattr(baselines, "build_deep"):
        return [], "baselines.build_deep not found: deep baselines skipped"
    known = getattr(baselines, "DEEP", None)
    present = [m for m in DEEP_BASELINES if known is None or m in known]
    missing = [m for m in DEEP_BASELINES if m not in present]
    return present, (f"deep baselines not in baselines.DEEP, skipped: {', '.join(missing)}" if missing else None)


# ----------------------------------------------------------------------------- 0. against a plain PyTorch loop

class PlainNet(nn.Module):
    """HAGCN's default layers without the graph: encoder, MLP hash head, W3 + LayerNorm (the gcn filter without
    A_hat), decoder; the baseline for what a training step of these shapes costs in plain PyTorch."""

    def __init__(self, d_in: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, HIDDEN), nn.GELU())
        self.head = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, BITS))
        self.w3, self.norm = nn.Linear(HIDDEN, HIDDEN), nn.LayerNorm(HIDDEN)
        self.decoder = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU(),
                                     nn.Linear(HIDDEN, d_in))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1 = self.encoder(x)
        return self.decoder(self.norm(self.w3(z1))), self.head(z1)


def plain_loss(out, x):
    """A plain MSE: reconstruction, and the hash head's logits toward 0 (so that every layer gets a gradient)."""
    recon, h = out
    return nn.functional.mse_loss(recon, x) + nn.functional.mse_loss(h, torch.zeros_like(h))


def plain_steps(X, idx_batches, device):
    """The plain loop: PlainNet, plain_loss, torch.optim.Adam defaults, shuffled batches; seconds for all steps."""
    torch.manual_seed(0)
    model = PlainNet(X.shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sync = sync_fn(device)
    sync()
    t = time.perf_counter()
    for idx in idx_batches:
        xb = X[idx]
        loss = plain_loss(model(xb), xb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync()
    return time.perf_counter() - t


def step_gflop(model, loss_fn, X, y, coords=None) -> float:
    """GFLOP of one forward + backward (torch.utils.flop_counter: matmuls, convolutions; the elementwise work and
    Adam's ~10 FLOP per parameter are left out); `coords`: the rows' diffusion coordinates, for HAGCN."""
    from torch.utils.flop_counter import FlopCounterMode
    xb, yb = X[:BATCH], y[:BATCH]
    with FlopCounterMode(display=False) as counter:
        loss = loss_fn(model(xb) if coords is None else model(xb, coords=coords[:BATCH]), xb, yb)
        total(loss).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def peak_gflops(device, dtype=torch.float32, n=2048, reps=5) -> float:
    """Achieved GFLOP/s of one large n x n matmul: the machine's practical peak for this dtype, measured now."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    return 2 * n ** 3 / (time_ms(lambda: a @ b, device, reps=reps, warmup=2) / 1e3) / 1e9


def bench_vs_plain(X, y, n_classes, args, device, steps, rounds, log):
    """Seconds of `steps` steps of train.train (the project's default HAGCN-gcn run: neighbourhood batches, fused
    Adam, the loss terms, the NaN checks) against the same number of plain-loop steps, interleaved over `rounds`
    so that load from other processes falls on both; returns (median ratio, hagcn ms/step, plain ms/step)."""
    rows = min(steps * BATCH, len(X))
    Xs, ys = X[:rows], y[:rows]
    g = global_graph(Xs.cpu().numpy(), args, GRAPH_CACHE)
    gen = torch.Generator().manual_seed(0)
    n_steps = math.ceil(rows / BATCH)

    def hagcn_run():
        model, loss_fn = build("gcn", X.shape[1], n_classes, args)
        model.to(device)
        return train_from_args(model, loss_fn, Xs, ys, args, g, "gcn", num_epochs=1)

    def plain_run():
        return plain_steps(Xs, torch.randperm(rows, generator=gen).to(device).split(BATCH), device)

    hagcn_run(), plain_run()  # warm-up
    h, p = [], []
    for r in range(rounds):
        h.append(hagcn_run())
        p.append(plain_run())
        log(f"  round {r + 1}/{rounds}: train.train {h[-1] / n_steps * 1e3:.1f} ms/step, plain loop "
            f"{p[-1] / n_steps * 1e3:.1f} ms/step, ratio {h[-1] / p[-1]:.2f}")
    ratios = [a / b for a, b in zip(h, p)]
    return med(ratios), med(h) / n_steps * 1e3, med(p) / n_steps * 1e3


CANDIDATES = {  # name: (Adam keyword arguments, autocast bf16, torch.compile)
    "Adam single-tensor (for-loop)": ({"foreach": False}, False, False),
    "Adam foreach": ({"foreach": True}, False, False),
    "Adam fused": ({"fused": True}, False, False),
    "Adam fused + torch.compile": ({"fused": True}, False, True),
    "Adam fused + bf16 autocast": ({"fused": True}, True, False),
}


def bench_candidates(X, y, coords, n_classes, args, device, n_steps, threads, log):
    """Median wall and CPU ms of a HAGCN-gcn step (the forward and loss as train.train runs them, with the rows'
    diffusion coordinates `coords`) under each candidate and thread count, all interleaved step by step, next to the
    plain loop's step."""
    def make(name):
        torch.manual_seed(0)
        if name == "plain loop (Adam defaults)":
            model, opt_kw, bf16 = PlainNet(X.shape[1]).to(device), {}, False
            fwd = lambda xb, yb, cb: plain_loss(model(xb), xb)
        else:
            opt_kw, bf16, compiled = CANDIDATES[name]
            model, loss_fn = build("gcn", X.shape[1], n_classes, args)
            model.to(device).set_epoch(0, args.num_epochs)
            fwd = lambda xb, yb, cb: total(loss_fn(model(xb, coords=cb), xb, yb))
            if compiled:
                fwd = torch.compile(fwd)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, **opt_kw)

        def step(idx):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = fwd(X[idx], y[idx], coords[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    names = ["plain loop (Adam defaults)", *CANDIDATES]
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(len(X), (BATCH,), generator=gen).to(device) for _ in range(n_steps + 3)]
    sync = sync_fn(device)
    before = torch.get_num_threads()
    steps, first = {}, {}
    for t in threads:
        torch.set_num_threads(t)
        for n in names:
            start = time.perf_counter()
            steps[n, t] = make(n)
            steps[n, t](batches[0])  # compiles here
            first[n, t] = time.perf_counter() - start
    wall = {k: [] for k in steps}
    cpu = {k: [] for k in steps}
    for i, idx in enumerate(batches[1:]):
        for (n, t), step in steps.items():
            torch.set_num_threads(t)
            sync()
            w, c = time.perf_counter(), time.process_time()
            step(idx)
            sync()
            if i >= 2:
                wall[n, t].append((time.perf_counter() - w) * 1e3)
                cpu[n, t].append((time.process_time() - c) * 1e3)
    torch.set_num_threads(before)
    rows = []
    for (n, t) in steps:
        base_w, base_c = med(wall["plain loop (Adam defaults)", t]), med(cpu["plain loop (Adam defaults)", t])
        rows.append([n, str(t), f"{med(wall[n, t]):.1f}", f"{med(wall[n, t]) / base_w:.2f}",
                     f"{med(cpu[n, t]):.1f}", f"{med(cpu[n, t]) / base_c:.2f}", f"{first[n, t]:.1f}"])
    log(table(["HAGCN-gcn step", "threads", "wall ms", "vs plain", "CPU ms", "vs plain (CPU)", "first step s"],
              rows, f"Speed candidates, medians over {n_steps} interleaved steps (ratios against the plain loop "
                    "at the same thread count; CPU ms = process time, all threads)"))


# ----------------------------------------------------------------------------- 1. seconds per epoch (train.train)

def bench_epochs(methods, X, y, n_classes, args, device, steps, epochs, reps, log):
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
        sec = train_from_args(model, loss_fn, Xr, yr, method_args(m, args), graphs[len(Xr)], m, num_epochs=ne)
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


# ----------------------------------------------------------------------------- 2. one step, segment by segment

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


SEGMENTS = ["data", "graph", "spectrum", "filter", "rest fwd+loss", "bwd+opt"]


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


def profile_steps(method, X, y, n_classes, args, device, n_steps, warmup=5, opt_kwargs=None):
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


# ----------------------------------------------------------------------------- 3. data loading

def bench_indexing(X, y, args, device, n=200):
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


# ----------------------------------------------------------------------------- extras (ablations)

def time_ms(fn, device, reps=30, warmup=3) -> float:
    sync = sync_fn(device)
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t) * 1e3)
    return med(out)


def extra_batch_size(X, device, log):
    """Graph and spectrum cost against the batch size; on a GPU also eigh and Lanczos through the CPU (graph.on_host
    with max_rows at the batch size), the comparison that sets graph.HOST_MAX_ROWS."""
    on_gpu = device.type == "cuda"
    rows = []
    for b in (64, 128, 256, 512, 1024):
        xb = X[:b]
        g = graph_mod.batch_graph(xb, KNN)
        z = torch.randn(b, HIDDEN, device=device)
        reps = 30 if b <= 256 else 10
        row = [str(b), f"{time_ms(lambda: graph_mod.batch_graph(xb, KNN), device, reps):.2f}",
               f"{time_ms(lambda: torch.linalg.eigh(g.lap), device, reps):.2f}",
               f"{time_ms(lambda: graph_mod.lanczos(g.lap, ORDER), device, reps):.2f}",
               f"{time_ms(lambda: g.a_hat @ z, device, reps):.2f}"]
        if on_gpu:
            via_cpu = lambda fn, *a: graph_mod.on_host(fn, g.lap, *a, max_rows=b)
            row += [f"{time_ms(lambda: via_cpu(torch.linalg.eigh), device, reps):.2f}",
                    f"{time_ms(lambda: via_cpu(graph_mod.lanczos, ORDER), device, reps):.2f}"]
        rows.append(row)
    log(table(["batch", "batch_graph ms", "eigh ms", f"lanczos(K={ORDER}) ms", "A_hat @ Z (h=768) ms"]
              + (["eigh via CPU ms", "lanczos via CPU ms"] if on_gpu else []), rows,
              "Extras A: graph / spectrum cost against the batch size (medians)"))


def extra_threads(X, y, n_classes, args, device, n_steps, log):
    if device.type != "cpu":
        return
    before = torch.get_num_threads()
    rows = []
    for m in ("gcn", "cheby", "fourier"):
        cells = [m]
        for t in sorted({1, before}):
            torch.set_num_threads(t)
            _, total = profile_steps(m, X, y, n_classes, args, device, n_steps)
            cells.append(f"{total:.1f}")
        torch.set_num_threads(before)
        rows.append(cells)
    log(table(["filter"] + [f"{t} thread(s) ms/step" for t in sorted({1, before})], rows,
              "Extras B: torch.set_num_threads (median ms per step, segmented step)"))


def extra_adam(X, y, coords, n_classes, args, device, n_steps, log):
    """`coords`: the rows' diffusion coordinates (section 0's), for the forward that fills the gradients."""
    rows = []
    for m in ("gcn", "cheby"):
        model, loss_fn = build(m, X.shape[1], n_classes, args)
        model.to(device).train()
        xb, yb = X[:BATCH], y[:BATCH]
        total(loss_fn(model(xb, coords=coords[:BATCH]), xb, yb)).backward()
        cells = [m, f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"]
        for kw in ({"foreach": False}, {"foreach": True}, {"fused": True}):
            try:
                opt = torch.optim.Adam(model.parameters(), lr=args.lr, **kw)
                cells.append(f"{time_ms(opt.step, device):.2f}")
            except (RuntimeError, TypeError) as e:
                cells.append("n/a")
                log(f"  Adam {kw} on {device}: {e}")
        for kw in ({}, {"fused": True}):  # the whole step, as train.train runs it, default vs fused Adam
            try:
                cells.append(f"{profile_steps(m, X, y, n_classes, args, device, n_steps, opt_kwargs=kw)[1]:.1f}")
            except (RuntimeError, TypeError):
                cells.append("n/a")
        rows.append(cells)
    log(table(["model", "params", "step: for-loop ms", "foreach ms (default)", "fused ms",
               "whole step, default ms", "whole step, fused ms"], rows,
              "Extras D: Adam (medians): the optimiser step alone, then a whole training step"))


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1, help="whole epochs per round when --steps 0")
    p.add_argument("--steps", type=int, default=50, help="steps per round, extrapolated to an epoch (0: whole epochs)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (everything lives there)")
    p.add_argument("--n_train", type=int, default=None, help="training rows (default: the whole ref training part)")
    p.add_argument("--reps", type=int, default=3, help="rounds for section 1")
    p.add_argument("--profile_steps", type=int, default=50, help="steps per method for section 2")
    p.add_argument("--methods", nargs="+", default=None, help="subset of the filters and deep baselines")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch.set_num_threads (CPU); several: the candidates table compares them, the rest uses the first")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="train.train's --precision")
    p.add_argument("--ratio_steps", type=int, default=30, help="section 0: steps per round")
    p.add_argument("--ratio_rounds", type=int, default=5, help="section 0: rounds")
    p.add_argument("--candidates", action="store_true", help="section 0: time each speed candidate")
    p.add_argument("--candidate_steps", type=int, default=30, help="section 0: interleaved steps per candidate")
    p.add_argument("--only_ratio", action="store_true", help="stop after section 0")
    p.add_argument("--extras", action="store_true", help="also run the ablations (batch size, threads, Adam)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads[0])
    log = lambda s="": print(s, flush=True)
    t_all = time.perf_counter()

    data = load_fashion_mnist()
    split = make_splits(data.y, "ref", 1, 0)[0]
    Xn = standardise(data.X, split.train)[split.train]
    yn = data.y[split.train]
    if a.n_train:
        keep = np.sort(np.random.default_rng(0).permutation(len(yn))[:a.n_train])
        Xn, yn = Xn[keep], yn[keep]
    X = torch.from_numpy(np.ascontiguousarray(Xn)).to(device)
    y = torch.from_numpy(yn).to(device)
    check_device(device, "X, y", X, y)
    n_classes = len(data.classes)
    args = project_args(seed=0)
    args.precision = a.precision

    deep, note = available_baselines()
    methods = list(FILTER_NAMES) + [PAPER_GRAPH] + deep
    if a.methods:
        methods = [m for m in methods if m in a.methods]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    log(f"Fashion-MNIST ref training part: {len(X)} x {X.shape[1]}, batch {BATCH}, hidden {HIDDEN}, K {ORDER}, "
        f"{BITS} bits, knn {KNN}, head {args.hash_head}, loss {args.loss_form}/{args.sim_target}, lr {args.lr}; "
        f"torch {torch.__version__} on {device} ({dev_name})")
    log("load average (1, 5, 15 min) at start: %.2f %.2f %.2f (other processes share these cores; medians and "
        "interleaved rounds damp, but do not remove, their effect)" % os.getloadavg())
    if note:
        log(f"note: {note}")

    # 0
    log(f"\n[0] train.train (default HAGCN-gcn, --precision {a.precision}) against a plain PyTorch loop of the same "
        f"shape, {a.ratio_steps} steps x {a.ratio_rounds} rounds, {torch.get_num_threads()} thread(s)")
    ratio, h_ms, p_ms = bench_vs_plain(X, y, n_classes, args, device, a.ratio_steps, a.ratio_rounds, log)
    model, loss_fn = build("gcn", X.shape[1], n_classes, args)
    model.to(device).set_epoch(0, args.num_epochs)
    coords = global_graph(X.cpu().numpy(), args, GRAPH_CACHE).coords.to(device)
    gflop, plain_gflop = step_gflop(model, loss_fn, X, y, coords), step_gflop(PlainNet(X.shape[1]).to(device),
                                                                     lambda o, x, _: plain_loss(o, x), X, y)
    peak, peak_bf16 = peak_gflops(device), peak_gflops(device, torch.bfloat16)
    log(f"step time ratio train.train / plain loop: {ratio:.2f} (median of rounds; target <= 0.7: "
        f"{'met' if ratio <= 0.7 else 'NOT met'}); {h_ms:.1f} vs {p_ms:.1f} ms/step")
    log(f"a HAGCN-gcn step: {gflop:.2f} GFLOP forward + backward (plain loop {plain_gflop:.2f}); achieved "
        f"{gflop / h_ms * 1e3:.1f} GFLOP/s against a {peak:.1f} GFLOP/s fp32 peak ({gflop / h_ms * 1e3 / peak:.0%}; "
        f"2048^2 matmul, {torch.get_num_threads()} thread(s), now; bf16 matmul {peak_bf16:.1f} GFLOP/s)")
    if a.candidates:
        bench_candidates(X, y, coords, n_classes, args, device, a.candidate_steps,
                         a.threads or [torch.get_num_threads()], log)
    if a.only_ratio:
        return 0

    # 1
    mode = f"{a.steps} steps x {a.reps} rounds, extrapolated" if a.steps else f"{a.epochs} epoch(s) x {a.reps} rounds"
    log(f"\n[1] seconds per epoch with train.train ({mode})")
    times, prepare_s, spe = bench_epochs(methods, X, y, n_classes, args, device, a.steps, a.epochs, a.reps, log)
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
              f"Seconds per epoch ({spe} steps of {BATCH}) on {device}"))
    slow = [m for m in methods if is_hagcn(m) and med(times[m]) / gcn > 1.5]
    log("target (every filter within 1.5x of gcn): " + ("met" if not slow else f"NOT met by {', '.join(slow)}"))
    pre = {m: s for m, s in prepare_s.items() if s > 0.05}
    if pre:
        log("one-off prepare() before the first epoch (not in s/epoch): "
            + ", ".join(f"{m} {s:.1f}s" for m, s in pre.items()))

    # 2
    log(f"\n[2] one training step split into segments (median ms over {a.profile_steps} steps)")
    rows = []
    for m in methods:
        seg, total = profile_steps(m, X, y, n_classes, args, device, a.profile_steps)
        graphy = is_hagcn(m)
        cells = [m] + [f"{seg[s]:.2f}" if graphy or s not in ("graph", "spectrum", "filter") else "-"
                       for s in SEGMENTS]
        rows.append(cells + [f"{sum(seg.values()):.1f}", f"{total:.1f}"])
    log(table(["method"] + SEGMENTS + ["sum", "total"], rows,
              f"Step segments on {device} (ms; 'sum' = sum of segment medians, 'total' = median step)"))

    # 3
    idx_ms, epoch_ms, pool_s, n_batches = bench_indexing(X, y, args, device)
    step_ms = med(times["gcn"]) / spe * 1e3 if "gcn" in times else float("nan")
    log(f"\n[3] data loading on {device}: X[idx], y[idx] for a batch of {BATCH}: {idx_ms * 1e3:.0f} us median "
        f"({idx_ms / step_ms * 100:.2f}% of a gcn step of {step_ms:.1f} ms); "
        f"an epoch's batch indices (batch_group {args.batch_group}): {epoch_ms:.2f} ms ({n_batches} batches); "
        f"neighbour pool of the {len(X)} training rows, once per fold: {pool_s:.1f} s")

    if a.extras:
        log("\n[extras]")
        extra_batch_size(X, device, log)
        extra_threads(X, y, n_classes, args, device, min(a.profile_steps, 30), log)
        extra_adam(X, y, coords, n_classes, args, device, min(a.profile_steps, 30), log)
    log(f"\nbenchmark wall time {time.perf_counter() - t_all:.0f} s; load average at the end: %.2f %.2f %.2f"
        % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
