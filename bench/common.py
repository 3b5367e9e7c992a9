"""What the training-speed benchmarks share: the setting, the models, the timing helpers and the command line.

The setting: Fashion-MNIST (784-d pixels, standardised on the ref split's training part), batch 128, hidden 768,
K = 4, 32 bits, knn 10, the project's default loss and head; the models exactly as main.py builds them. Used by
bench/step_ratio.py (section 0), bench/epoch_times.py (sections 1 and 3), bench/step_segments.py (section 2) and
bench/gpu_extras.py (the ablations); not a script: `python bench/NAME.py` puts bench/ on sys.path, where those
scripts `import common`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import baselines  # noqa: E402
from arguments import FILTER_NAMES, build_parser  # noqa: E402
from data import load_fashion_mnist, make_splits, standardise  # noqa: E402
from main import build_hagcn  # noqa: E402

DEEP_BASELINES = ["bihalf", "dsh", "hashnet", "shc"]
BITS, HIDDEN, ORDER, KNN, BATCH = 32, 768, 4, 10, 128
PAPER_GRAPH = "gcn-batchgraph"  # gcn on the paper's batch k-NN graph with its k-NN target (before the global graph)
GRAPH_CACHE = Path("logs/bench_graphs")  # main.global_graph's cache: the one-off graph is built once per row set


# ----------------------------------------------------------------------------- devices and timing

def sync_fn(device: torch.device) -> Callable[[], None]:
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


def time_ms(fn: Callable[[], object], device: torch.device, reps: int = 30, warmup: int = 3) -> float:
    """Median ms of `fn()` over `reps` calls after `warmup` untimed ones (synchronised on cuda)."""
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


def table(headers: list[str], rows: list[list[str]], title: str) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(line(headers))
    return "\n".join([title, rule, line(headers), rule, *map(line, rows), rule])


def log(s: str = "") -> None:
    print(s, flush=True)


# ----------------------------------------------------------------------------- models

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


def build(method: str, d_in: int, n_classes: int, args: argparse.Namespace):
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


def methods(wanted: list[str] | None) -> tuple[list[str], str | None]:
    """HAGCN's filters, PAPER_GRAPH and the deep baselines (those in `wanted`, when given); the baselines' note."""
    deep, note = available_baselines()
    names = list(FILTER_NAMES) + [PAPER_GRAPH] + deep
    return ([m for m in names if m in wanted] if wanted else names), note


# ----------------------------------------------------------------------------- command line and data

def parser(doc: str, threads_help: str = "torch.set_num_threads (CPU); with several, the first") \
        -> argparse.ArgumentParser:
    """The flags every script takes: --device, --n_train, --threads; `doc`'s first line describes the script."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (everything lives there)")
    p.add_argument("--n_train", type=int, default=None, help="training rows (None: the whole ref training part)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help=threads_help)
    return p


def add_methods(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", nargs="+", default=None, help="subset of the filters and deep baselines (None: all)")


def add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="train.train's --precision")


@dataclass
class Bench:
    """What every section works on: the training part on `device`, the project's arguments, the start time."""
    X: torch.Tensor
    y: torch.Tensor
    n_classes: int
    args: argparse.Namespace
    device: torch.device
    start: float


def training_part(n_train: int | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fashion-MNIST's ref training part standardised on itself (`n_train` of its rows, in order, when given) on
    `device`; the number of classes."""
    data = load_fashion_mnist()
    split = make_splits(data.y, "ref", 1, 0)[0]
    Xn = standardise(data.X, split.train)[split.train]
    yn = data.y[split.train]
    if n_train:
        keep = np.sort(np.random.default_rng(0).permutation(len(yn))[:n_train])
        Xn, yn = Xn[keep], yn[keep]
    X = torch.from_numpy(np.ascontiguousarray(Xn)).to(device)
    y = torch.from_numpy(yn).to(device)
    check_device(device, "X, y", X, y)
    return X, y, len(data.classes)


def setup(a: argparse.Namespace) -> Bench | None:
    """The device, the thread count and the data of the parsed flags `a`; None (after saying why) without CUDA."""
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return None
    if a.threads:
        torch.set_num_threads(a.threads[0])
    start = time.perf_counter()
    X, y, n_classes = training_part(a.n_train, device)
    args = project_args(seed=0)
    args.precision = getattr(a, "precision", args.precision)
    return Bench(X, y, n_classes, args, device, start)


def header(b: Bench, note: str | None = None) -> None:
    """The setting, the machine and its load at the start."""
    args, device = b.args, b.device
    threads = torch.get_num_threads()
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {threads} threads"
    log(f"Fashion-MNIST ref training part: {len(b.X)} x {b.X.shape[1]}, batch {BATCH}, hidden {HIDDEN}, K {ORDER}, "
        f"{BITS} bits, knn {KNN}, head {args.hash_head}, loss {args.loss_form}/{args.sim_target}, lr {args.lr}; "
        f"torch {torch.__version__} on {device} ({dev_name})")
    log("load average (1, 5, 15 min) at start: %.2f %.2f %.2f (other processes share these cores; medians and "
        "interleaved rounds damp, but do not remove, their effect)" % os.getloadavg())
    if note:
        log(f"note: {note}")


def footer(b: Bench) -> None:
    log(f"\nbenchmark wall time {time.perf_counter() - b.start:.0f} s; load average at the end: %.2f %.2f %.2f"
        % os.getloadavg())
