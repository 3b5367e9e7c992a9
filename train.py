"""The one training loop that serves every deep method (HAGCN and the deep baselines), with atomic
per-epoch checkpoints (model, optimiser, schedules, RNG states, epoch, validation state), resume, a learning-rate
schedule, a validation mAP every few epochs (epoch selection, early stopping) and a per-epoch history of the loss
terms and the validation mAP (epochs.csv, optionally TensorBoard)."""
from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

import distributed
from data import RowSource
from graph import batch_adjacency
from losses import total
from model import HashModel
from results import atomic_write, is_writer, write_csv

LossFn = Callable[[dict, torch.Tensor, torch.Tensor], dict[str, torch.Tensor] | torch.Tensor]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf: the run stops, naming where, and no result row is written."""


def atomic_save(obj: object, path: Path) -> None:
    """torch.save through results.atomic_write: never half a file. It writes to an open file, where a full disk is an
    OSError (ENOSPC), not the C++ writer's RuntimeError about an 'unexpected pos'."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    atomic_write(path, write)


class CheckpointError(RuntimeError):
    """--resume found a checkpoint it cannot use: main.py prints one line and exits with status 2."""


def load_checkpoint(path: Path, model: HashModel, opt: torch.optim.Optimizer, gen: torch.Generator
                    ) -> tuple[int, float, dict]:
    """Restore a checkpoint written by `train`; returns (next epoch, training seconds so far, validation state)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        return state["epoch"] + 1, state["seconds"], state["validation"]
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

    def add(self, epoch: int, terms: dict[str, float], seconds: float, lr: float, val: float | None = None,
            val_seconds: float = 0.0) -> None:
        """Record epoch (1-based) with the mean of each term over its steps, its last learning rate and, on the
        epochs that were validated, the validation mAP and the seconds it took (empty otherwise)."""
        row = {"epoch": epoch, **{k: f"{v:.6g}" for k, v in terms.items()},
               "total": f"{sum(terms.values()):.6g}", "seconds": f"{seconds:.3f}", "lr": f"{lr:.6g}",
               "val_map": "" if val is None else f"{val:.6f}",
               "val_seconds": "" if val is None else f"{val_seconds:.3f}"}
        self.rows.append(row)
        write_csv(self.path, self.rows, list(dict.fromkeys(k for r in self.rows for k in r)))
        if self.writer is not None:
            for name, value in [*terms.items(), ("total", sum(terms.values()))]:
                self.writer.add_scalar(f"loss/{name}", value, epoch)
            self.writer.add_scalar("lr", lr, epoch)
            if val is not None:
                self.writer.add_scalar("val/map", val, epoch)
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


@dataclass
class Validation:
    """The validation mAP of a model (`score(model)`, on a labelled part of the training split), taken every `every`
    epochs and after the last. `select` keeps the codes of the 'last' epoch or of the 'best_val' one; `patience` > 0
    stops training after that many validations in a row without a better score (early stopping)."""
    score: Callable[[HashModel], float]
    every: int = 1
    select: str = "last"
    patience: int = 0


class Trained(NamedTuple):
    """What train() reports: training seconds (validation excluded), epochs trained (fewer than asked after an early
    stop), the epoch whose model was kept, and its validation mAP (None without validation)."""
    seconds: float
    epochs: int
    kept_epoch: int
    val_map: float | None


class EpochSelection:
    """The validation side of train(): the score of each validated epoch, the best so far (its weights kept in memory
    and, for 'best_val', in best.pt beside the checkpoint) and the patience count, which the checkpoint carries so
    that a resumed run selects and stops as an uninterrupted one. Without a Validation it records nothing."""

    def __init__(self, validation: Validation | None, best_path: Path | None):
        self.validation, self.best_path = validation, best_path
        self.state = {"best_epoch": 0, "best": -math.inf, "last": None, "stale": 0}
        self.best_weights: dict | None = None

    def restore(self, state: dict) -> None:
        """The state a checkpoint saved, and the best epoch's weights from best.pt."""
        self.state = state
        if self.keeps_best and state["best_epoch"]:
            self.best_weights = load_weights(self.best_path)

    @property
    def keeps_best(self) -> bool:
        return self.validation is not None and self.validation.select == "best_val"

    @property
    def stopped(self) -> bool:
        """Patience ran out (also right after resuming a run that had stopped early)."""
        return self.validation is not None and 0 < self.validation.patience <= self.state["stale"]

    def after_epoch(self, model: HashModel, epoch: int, num_epochs: int) -> tuple[float | None, float]:
        """Score the model after 0-based `epoch` when it is due (every `every` epochs and the last); returns (the
        score or None, its seconds)."""
        v = self.validation
        if v is None or ((epoch + 1) % v.every and epoch + 1 != num_epochs):
            return None, 0.0
        t0 = time.perf_counter()
        score = v.score(model)
        model.train()
        improved = score > self.state["best"]
        self.state = {"best_epoch": epoch + 1 if improved else self.state["best_epoch"],
                      "best": max(score, self.state["best"]), "last": score,
                      "stale": 0 if improved else self.state["stale"] + 1}
        if improved and self.keeps_best:
            self.best_weights = {k: t.detach().clone() for k, t in model.state_dict().items()}
            if self.best_path is not None and is_writer():  # before the checkpoint that records it as the best
                atomic_save(self.best_weights, self.best_path)
        return score, time.perf_counter() - t0

    def result(self, model: HashModel, seconds: float, epochs: int) -> Trained:
        """What train() returns; for 'best_val' the best epoch's weights are loaded into `model` first."""
        if self.validation is None:
            return Trained(seconds, epochs, epochs, None)
        if self.keeps_best and self.best_weights is not None:
            model.load_state_dict(self.best_weights)
            return Trained(seconds, epochs, self.state["best_epoch"], self.state["best"])
        return Trained(seconds, epochs, epochs, self.state["last"])


def learning_rate(peak: float, schedule: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """The rate of 0-based `step`: constant `peak`, or (cosine) a linear warm-up to `peak` over `warmup_steps`, then
    a half cosine down to 0 at `total_steps` (Loshchilov & Hutter, SGDR, ICLR 2017, without restarts)."""
    if schedule == "constant":
        return peak
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def as_terms(value: dict[str, torch.Tensor] | torch.Tensor) -> dict[str, torch.Tensor]:
    """A loss function's named terms; a plain scalar is one term, 'loss'."""
    return value if isinstance(value, dict) else {"loss": value}


def train(model: HashModel, loss_fn: LossFn, X: RowSource, y: torch.Tensor, *, num_epochs: int,
          batch_size: int, lr: float, seed: int, desc: str, checkpoint: Path | None = None,
          resume: bool = False, neighbours: torch.Tensor | None = None, group: int = 1,
          edges: torch.Tensor | None = None, coords: torch.Tensor | None = None, history: Path | None = None,
          tensorboard: bool = False, precision: str = "fp32", lr_schedule: str = "constant",
          warmup_epochs: float = 0.0, validation: Validation | None = None) -> Trained:
    """Adam on mini-batches of the training rows. Each batch's rows are read from X (X[index array], e.g. data.Rows
    over a memory map) and moved to y's device, where y and the model already are.

    Batches are shuffled partitions, or neighbourhood batches when `neighbours` is given (see epoch_batches).
    They come from a generator seeded with `seed`, so the same seed gives the same model. `edges` (n, k), the global
    k-NN graph of the training rows, and `coords` (n, c), their diffusion coordinates in it (both on y's device),
    reach a model that `uses_graph` restricted to each batch (graph_inputs). `loss_fn` returns a scalar or a dict of
    named terms whose sum is minimised; each term's epoch mean goes to `history` (epochs.csv).
    The rate follows `lr_schedule` step by step (learning_rate). With `validation`, the model is scored every few
    epochs (the score goes to `history` and the progress bar; scoring changes no random state, so the model is the
    same with and without it), the best epoch's weights are kept beside the checkpoint (best.pt) when it selects
    'best_val' and restored at the end, and training stops early after `patience` validations without improvement.
    Adam is the fused kernel (one pass over all parameters; the single-tensor default was a quarter of a CPU step).
    precision "bf16" runs the forward and loss under bfloat16 autocast (fp32 weights, optimiser and codes).
    Under torchrun every rank draws the same global batches and trains on its share (rank_share), with its own
    batch graph; DistributedDataParallel averages the gradients, so every rank holds the same model, and rank 0
    alone writes the checkpoint and `history` (the loss terms averaged over the ranks). The progress bar is drawn
    by rank 0 on a terminal only: a log file gets main.py's one line per run instead of every refresh.
    """
    device = y.device
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    gen = torch.Generator().manual_seed(seed)
    selection = EpochSelection(validation, checkpoint.with_name("best.pt") if checkpoint is not None else None)
    start, seconds = 0, 0.0
    if resume and checkpoint is not None and checkpoint.is_file():
        start, seconds, state = load_checkpoint(checkpoint, model, opt, gen)
        selection.restore(state)
        if is_writer():
            print(f"{desc}: resuming from {checkpoint} after epoch {start} of {num_epochs}", file=sys.stderr)
    else:
        model.prepare(X, y)
    log = EpochHistory(history, start, tensorboard) if history is not None and is_writer() else None
    net = distributed.data_parallel(model)
    rank, world, group = distributed.rank(), distributed.world_size(), min(group, batch_size)
    steps_per_epoch = math.ceil(len(X) / batch_size)
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    epoch = start - 1
    model.train()
    quiet = {} if is_writer() and sys.stderr.isatty() else {"disable": True}  # unset: TQDM_DISABLE=1 still works
    bar = tqdm(range(start, start if selection.stopped else num_epochs), desc=desc, leave=False, dynamic_ncols=True,
               initial=start, total=num_epochs, **quiet)
    for epoch in bar:
        t0 = time.perf_counter()
        model.set_epoch(epoch, num_epochs)
        sums: dict[str, torch.Tensor] = {}
        for step, batch in enumerate(epoch_batches(len(X), batch_size, gen, neighbours, group)):
            rate = learning_rate(lr, lr_schedule, epoch * steps_per_epoch + step, num_epochs * steps_per_epoch,
                                 warmup_steps)
            for param_group in opt.param_groups:
                param_group["lr"] = rate
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
        val, val_seconds = selection.after_epoch(model, epoch, num_epochs)
        last = selection.state["last"]
        bar.set_postfix(loss=f"{sum(means.values()):.4f}", **({} if last is None else {"val": f"{last:.4f}"}))
        if log is not None:  # before the checkpoint: a crash in between re-runs this epoch and rewrites its row
            log.add(epoch + 1, means, epoch_seconds, opt.param_groups[0]["lr"], val, val_seconds)
        if checkpoint is not None and is_writer():  # written whole (atomic_save): a rank resuming never reads half
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                         "batch_rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "seconds": seconds,
                         "validation": selection.state}, checkpoint)
        if selection.stopped:
            break
    bar.close()
    if log is not None:
        log.close()
    return selection.result(model, seconds, epoch + 1)


def load_weights(path: Path | None) -> dict:
    """The model weights of best.pt (the best validation epoch's, written by train)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot resume, the best epoch's weights are unreadable ({type(e).__name__}); "
                              "delete the run folder or run without --resume")


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
