"""How does a training step of the project's loop compare with a plain PyTorch loop of the same shape?

Section 0 of the training-speed benchmarks (the setting: bench/common.py): `--ratio_steps` steps of train.train (the
default HAGCN-gcn run) against as many steps of PlainNet (the same layers without the graph, a plain MSE,
torch.optim.Adam defaults), interleaved over `--ratio_rounds` rounds (target: ratio <= 0.7); a step's GFLOP
(torch.utils.flop_counter) and the GFLOP/s achieved against the peak of a large matmul measured in the same run.
With --candidates: each speed candidate (Adam for-loop / foreach / fused, torch.compile, bf16 autocast) at each
--threads count, interleaved step by step with the plain loop.

Run: python bench/step_ratio.py [--candidates] [--threads 1 2] [--n_train N] [--device cpu|cuda] [--precision fp32|bf16]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TQDM_DISABLE", "1")  # train.train's progress bar would interleave with the tables

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
from common import BATCH, BITS, GRAPH_CACHE, HIDDEN, build, med, sync_fn, table, time_ms  # noqa: E402
from losses import total  # noqa: E402
from main import global_graph, train_from_args  # noqa: E402

PLAIN = "plain loop (Adam defaults)"
CANDIDATES = {  # name: (Adam keyword arguments, autocast bf16, torch.compile)
    "Adam single-tensor (for-loop)": ({"foreach": False}, False, False),
    "Adam foreach": ({"foreach": True}, False, False),
    "Adam fused": ({"fused": True}, False, False),
    "Adam fused + torch.compile": ({"fused": True}, False, True),
    "Adam fused + bf16 autocast": ({"fused": True}, True, False),
}


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


def plain_loss(out: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A plain MSE: reconstruction, and the hash head's logits toward 0 (so that every layer gets a gradient)."""
    recon, h = out
    return nn.functional.mse_loss(recon, x) + nn.functional.mse_loss(h, torch.zeros_like(h))


def plain_steps(X: torch.Tensor, idx_batches, device: torch.device) -> float:
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


def step_gflop(model: nn.Module, loss_fn, X: torch.Tensor, y: torch.Tensor, coords=None) -> float:
    """GFLOP of one forward + backward (torch.utils.flop_counter: matmuls, convolutions; the elementwise work and
    Adam's ~10 FLOP per parameter are left out); `coords`: the rows' diffusion coordinates, for HAGCN."""
    from torch.utils.flop_counter import FlopCounterMode
    xb, yb = X[:BATCH], y[:BATCH]
    with FlopCounterMode(display=False) as counter:
        loss = loss_fn(model(xb) if coords is None else model(xb, coords=coords[:BATCH]), xb, yb)
        total(loss).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 5) -> float:
    """Achieved GFLOP/s of one large n x n matmul: the machine's practical peak for this dtype, measured now."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    return 2 * n ** 3 / (time_ms(lambda: a @ b, device, reps=reps, warmup=2) / 1e3) / 1e9


def bench_vs_plain(X, y, n_classes, args, device, steps, rounds, log) -> tuple[float, float, float]:
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
        return train_from_args(model, loss_fn, Xs, ys, args, g, "gcn", num_epochs=1).seconds

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


def candidate_step(name: str, X, y, coords, n_classes, args, device) -> Callable[[torch.Tensor], None]:
    """One training step on the batch of row indices it is given, as candidate `name` (or the plain loop) runs it:
    the forward and loss as train.train runs them, with the rows' diffusion coordinates `coords`."""
    torch.manual_seed(0)
    if name == PLAIN:
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


def bench_candidates(X, y, coords, n_classes, args, device, n_steps, threads, log) -> None:
    """Median wall and CPU ms of a HAGCN-gcn step under each candidate and thread count, all interleaved step by
    step, next to the plain loop's step."""
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(len(X), (BATCH,), generator=gen).to(device) for _ in range(n_steps + 3)]
    sync = sync_fn(device)
    before = torch.get_num_threads()
    steps, first = {}, {}
    for t in threads:
        torch.set_num_threads(t)
        for n in [PLAIN, *CANDIDATES]:
            start = time.perf_counter()
            steps[n, t] = candidate_step(n, X, y, coords, n_classes, args, device)
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
        base_w, base_c = med(wall[PLAIN, t]), med(cpu[PLAIN, t])
        rows.append([n, str(t), f"{med(wall[n, t]):.1f}", f"{med(wall[n, t]) / base_w:.2f}",
                     f"{med(cpu[n, t]):.1f}", f"{med(cpu[n, t]) / base_c:.2f}", f"{first[n, t]:.1f}"])
    log(table(["HAGCN-gcn step", "threads", "wall ms", "vs plain", "CPU ms", "vs plain (CPU)", "first step s"],
              rows, f"Speed candidates, medians over {n_steps} interleaved steps (ratios against the plain loop "
                    "at the same thread count; CPU ms = process time, all threads)"))


def against_plain(b: common.Bench, a: argparse.Namespace) -> None:
    """Section 0: the ratio to the plain loop, the GFLOP and peak line, then the candidates with --candidates."""
    X, y, n_classes, args, device, log = b.X, b.y, b.n_classes, b.args, b.device, common.log
    log(f"\n[0] train.train (default HAGCN-gcn, --precision {args.precision}) against a plain PyTorch loop of the "
        f"same shape, {a.ratio_steps} steps x {a.ratio_rounds} rounds, {torch.get_num_threads()} thread(s)")
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__, threads_help="torch.set_num_threads (CPU); several: the candidates table compares "
                                            "them, the rest uses the first")
    common.add_precision(p)
    p.add_argument("--ratio_steps", type=int, default=30, help="steps per round")
    p.add_argument("--ratio_rounds", type=int, default=5, help="rounds")
    p.add_argument("--candidates", action="store_true", help="time each speed candidate")
    p.add_argument("--candidate_steps", type=int, default=30, help="interleaved steps per candidate")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    b = common.setup(a)
    if b is None:
        return 2
    common.header(b)
    against_plain(b, a)
    common.footer(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
