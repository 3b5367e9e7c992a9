"""The one training loop that serves every deep method (HAGCN and the deep baselines), with atomic
per-epoch checkpoints (model, optimiser, schedules, RNG states, epoch), resume, and a per-epoch loss history
(epochs.csv, optionally TensorBoard)."""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

import distributed
from data import RowSource
from graph import batch_adjacency
from losses import total
from model import HashModel
from results import is_writer

LossFn = Callable[[dict, torch.Tensor, torch.Tensor], dict[str, torch.Tensor] | torch.Tensor]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf: the run stops, naming where, and no result row is written."""


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary name in the same folder, then rename: a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class CheckpointError(RuntimeError):
    """--resume found a checkpoint it cannot use: main.py prints one line and exits with status 2."""


def load_checkpoint(path: Path, model: HashModel, opt: torch.optim.Optimizer, gen: torch.Generator) -> tuple[int, float]:
    """Restore a checkpoint written by `train`; returns (next epoch, training seconds so far)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        return state["epoch"] + 1, state["seconds"]
    except Exception as e:  # unpickling, missing keys and shape mismatches all raise different types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot resume from this checkpoint ({first}); delete it or run without --resume")


def epoch_batches(n: int, batch_size: int, gen: torch.Generator, neighbours: torch.Tensor | None = None,
                  group: int = 1, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """Row indices of one epoch's mini-batches, drawn on the CPU with `gen`, moved to `device` in one copy.

    Without `neighbours`: a shuffled partition of the n rows. With `neighbours` (n, m), the precomputed k-NN of
    the training rows: each batch holds batch_size // group anchors (group capped at batch_size), shuffled
    without replacement, each followed by group - 1 of its m neighbours drawn at random; an epoch has as many
    batches, ceil(n / batch_size), as a shuffled one. A random batch of 128 out of 56,000 items holds almost none of an item's true neighbours, so
    its k-NN graph links near-strangers; these batches hold real neighbourhoods.
    """
    perm = torch.randperm(n, generator=gen)
    if neighbours is None:
        return perm.to(device).split(batch_size)
    group = min(group, batch_size)
    per_batch = batch_size // group
    anchors = perm[:math.ceil(n / batch_size) * per_batch]
    pick = torch.randint(neighbours.shape[1], (len(anchors), group - 1), generator=gen)
    rows = torch.cat([anchors[:, None], neighbours[anchors[:, None], pick]], dim=1)
    return rows.reshape(-1).to(device).split(per_batch * group)


def rank_share(batch: torch.Tensor, group: int, rank: int, world: int) -> torch.Tensor:
    """Rank `rank`'s rows of a global batch out of `world`: a contiguous run of its whole groups of `group` rows
    (neighbourhood batches; 1 for shuffled ones), the same number for every rank. A short last batch (shuffled
    batches only) is first padded with its own rows, cyclically, as DistributedSampler pads an epoch: equal shares
    make the ranks' averaged gradient the gradient of the whole batch's mean loss."""
    groups = batch.view(-1, group)
    per_rank = math.ceil(len(groups) / world)
    padded = groups[torch.arange(per_rank * world, device=batch.device) % len(groups)]
    return padded[rank * per_rank:(rank + 1) * per_rank].reshape(-1)


def graph_inputs(idx: torch.Tensor, edges: torch.Tensor | None, coords: torch.Tensor | None,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """What the global neighbourhood graph tells a batch: its adjacency in the k-NN graph, its diffusion coordinates."""
    out = {}
    if edges is not None:
        out["adjacency"] = batch_adjacency(edges, idx, dtype)
    if coords is not None:
        out["coords"] = coords[idx]
    return out


class EpochHistory:
    """Per-epoch mean of each loss term, their sum and the epoch's seconds: `path` (epochs.csv, rewritten atomically
    after every epoch, so a resumed run continues it) and, with `tensorboard`, a SummaryWriter in path's folder."""

    def __init__(self, path: Path, start: int, tensorboard: bool = False):
        self.path = path
        self.rows = [r for r in read_epochs(path) if int(r["epoch"]) <= start] if start else []
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency, checked by arguments.py
            self.writer = SummaryWriter(log_dir=str(path.parent / "tensorboard"), purge_step=start + 1)

    def add(self, epoch: int, terms: dict[str, float], seconds: float) -> None:
        """Record epoch (1-based) with the mean of each term over its steps."""
        row = {"epoch": epoch, **{k: f"{v:.6g}" for k, v in terms.items()},
               "total": f"{sum(terms.values()):.6g}", "seconds": f"{seconds:.3f}"}
        self.rows.append(row)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in self.rows for k in r)))
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)
        if self.writer is not None:
            for name, value in [*terms.items(), ("total", sum(terms.values()))]:
                self.writer.add_scalar(f"loss/{name}", value, epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_epochs(path: Path) -> list[dict]:
    """The rows of an epochs.csv ([] when there is none)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def as_terms(value: dict[str, torch.Tensor] | torch.Tensor) -> dict[str, torch.Tensor]:
    """A loss function's named terms; a plain scalar is one term, 'loss'."""
    return value if isinstance(value, dict) else {"loss": value}


def train(model: HashModel, loss_fn: LossFn, X: RowSource, y: torch.Tensor, *, num_epochs: int,
          batch_size: int, lr: float, seed: int, desc: str, checkpoint: Path | None = None,
          resume: bool = False, neighbours: torch.Tensor | None = None, group: int = 1,
          edges: torch.Tensor | None = None, coords: torch.Tensor | None = None, history: Path | None = None,
          tensorboard: bool = False, precision: str = "fp32") -> float:
    """Adam on mini-batches of the training rows; returns training seconds. Each batch's rows are read from X
    (X[index array], e.g. data.Rows over a memory map) and moved to y's device, where y and the model already are.

    Batches are shuffled partitions, or neighbourhood batches when `neighbours` is given (see epoch_batches).
    They come from a generator seeded with `seed`, so the same seed gives the same model. `edges` (n, k), the global
    k-NN graph of the training rows, and `coords` (n, c), their diffusion coordinates in it (both on y's device),
    reach a model that `uses_graph` restricted to each batch (graph_inputs). `loss_fn` returns a scalar or a dict of
    named terms whose sum is minimised; each term's epoch mean goes to `history` (epochs.csv).
    Adam is the fused kernel (one pass over all parameters; the single-tensor default was a quarter of a CPU step).
    precision "bf16" runs the forward and loss under bfloat16 autocast (fp32 weights, optimiser and codes).
    Under torchrun every rank draws the same global batches and trains on its share (rank_share), with its own
    batch graph; DistributedDataParallel averages the gradients, so every rank holds the same model, and rank 0
    alone writes the checkpoint and `history` (the loss terms averaged over the ranks).
    """
    device = y.device
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    gen = torch.Generator().manual_seed(seed)
    start, seconds = 0, 0.0
    if resume and checkpoint is not None and checkpoint.is_file():
        start, seconds = load_checkpoint(checkpoint, model, opt, gen)
        if is_writer():
            print(f"{desc}: resuming from {checkpoint} after epoch {start} of {num_epochs}", file=sys.stderr)
    else:
        model.prepare(X, y)
    log = EpochHistory(history, start, tensorboard) if history is not None and is_writer() else None
    net = distributed.data_parallel(model)
    rank, world, group = distributed.rank(), distributed.world_size(), min(group, batch_size)
    model.train()
    quiet = {} if is_writer() else {"disable": True}  # rank 0 leaves `disable` unset, so TQDM_DISABLE=1 still works
    bar = tqdm(range(start, num_epochs), desc=desc, leave=False, dynamic_ncols=True, initial=start, total=num_epochs,
               **quiet)
    for epoch in bar:
        t0 = time.perf_counter()
        model.set_epoch(epoch, num_epochs)
        sums: dict[str, torch.Tensor] = {}
        for step, batch in enumerate(epoch_batches(len(X), batch_size, gen, neighbours, group)):
            rows = rank_share(batch, group, rank, world) if world > 1 else batch
            xb = torch.as_tensor(X[rows.numpy()], device=device)
            idx = rows.to(device)
            yb = y[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = net(xb, **graph_inputs(idx, edges, coords, xb.dtype)) if model.uses_graph else net(xb)
                terms = as_terms(loss_fn(out, xb, yb))
            loss = total(terms)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{desc}: loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0) + value.detach()
        epoch_seconds = time.perf_counter() - t0
        seconds += epoch_seconds
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingDiverged(f"{desc}: parameters became NaN or Inf at epoch {epoch + 1}, step {step + 1}")
        over_ranks = distributed.mean_over_ranks(torch.stack([s.double() for s in sums.values()]))
        means = {name: float(s) / (step + 1) for name, s in zip(sums, over_ranks)}
        bar.set_postfix(loss=f"{sum(means.values()):.4f}")
        if log is not None:  # before the checkpoint: a crash in between re-runs this epoch and rewrites its row
            log.add(epoch + 1, means, epoch_seconds)
        if checkpoint is not None and is_writer():  # written whole (atomic_save): a rank resuming never reads half
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                         "batch_rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "seconds": seconds},
                        checkpoint)
    if log is not None:
        log.close()
    return seconds


@torch.no_grad()
def encode(model: HashModel, X: RowSource, batch_size: int = 4096) -> np.ndarray:
    """{0,1} uint8 codes (n, L), each item encoded on its own (inductive); X is read batch_size rows at a time.
    Under torchrun each rank encodes a contiguous slice of the rows and every rank gets all the codes, in order."""
    model.eval()
    device = next(model.parameters()).device
    lo, hi = (len(X) * r // distributed.world_size() for r in (distributed.rank(), distributed.rank() + 1))
    codes = [model.codes(torch.as_tensor(X[start:min(start + batch_size, hi)], device=device)).cpu().numpy()
             for start in range(lo, hi, batch_size)]
    return distributed.gather_rows(np.concatenate(codes).astype(np.uint8))
