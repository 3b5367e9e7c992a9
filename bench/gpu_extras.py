"""What do the batch size, the thread count and Adam's implementation do to the cost of a training step?

The ablations of the training-speed benchmarks (the setting: bench/common.py), written for the GPU check
(bench/gpu.sh) and run on the CPU as well:
  A. graph and spectrum cost (batch_graph, eigh, Lanczos, A_hat @ Z) against the batch size; on a GPU also eigh and
     Lanczos through the CPU (graph.on_host), the comparison that sets graph.HOST_MAX_ROWS.
  B. on the CPU, a segmented step (bench/step_segments.py) with 1 thread against torch's default count.
  D. Adam's for-loop, foreach and fused implementations: the optimiser step alone, then a whole training step.

Run: python bench/gpu_extras.py [--device cpu|cuda] [--profile_steps 50] [--n_train N] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import graph as graph_mod  # noqa: E402
from common import BATCH, GRAPH_CACHE, HIDDEN, KNN, ORDER, build, table, time_ms  # noqa: E402
from losses import total  # noqa: E402
from main import global_graph  # noqa: E402
from step_segments import profile_steps  # noqa: E402


def extra_batch_size(X: torch.Tensor, device: torch.device, log) -> None:
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


def extra_threads(X, y, n_classes, args, device, n_steps, log) -> None:
    if device.type != "cpu":
        return
    before = torch.get_num_threads()
    rows = []
    for m in ("gcn", "cheby", "fourier"):
        cells = [m]
        for t in sorted({1, before}):
            torch.set_num_threads(t)
            _, step_ms = profile_steps(m, X, y, n_classes, args, device, n_steps)
            cells.append(f"{step_ms:.1f}")
        torch.set_num_threads(before)
        rows.append(cells)
    log(table(["filter"] + [f"{t} thread(s) ms/step" for t in sorted({1, before})], rows,
              "Extras B: torch.set_num_threads (median ms per step, segmented step)"))


def extra_adam(X, y, coords, n_classes, args, device, n_steps, log) -> None:
    """`coords`: the rows' diffusion coordinates, for the forward that fills the gradients."""
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


def extras(b: common.Bench, n_steps: int) -> None:
    """The three ablation tables; B and D time `n_steps` segmented steps per row."""
    X, y, n_classes, args, device, log = b.X, b.y, b.n_classes, b.args, b.device, common.log
    coords = global_graph(X.cpu().numpy(), args, GRAPH_CACHE).coords.to(device)
    log("\n[extras]")
    extra_batch_size(X, device, log)
    extra_threads(X, y, n_classes, args, device, n_steps, log)
    extra_adam(X, y, coords, n_classes, args, device, n_steps, log)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__)
    p.add_argument("--profile_steps", type=int, default=50, help="steps per row of tables B and D (at most 30)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    b = common.setup(a)
    if b is None:
        return 2
    common.header(b)
    extras(b, min(a.profile_steps, 30))
    common.footer(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
