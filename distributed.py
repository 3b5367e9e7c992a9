"""Multi-process training under torchrun: this process's rank, the process group, and the few collectives the grid
and the training loop use. torchrun (one node or several with a rendezvous endpoint) sets RANK, WORLD_SIZE and
LOCAL_RANK; a plain `python main.py` sets none, never joins a group, and every function here is then a no-op for
rank 0 of 1.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def launched() -> bool:
    """Whether a launcher (torchrun, or anything else that sets WORLD_SIZE) started this process as one of a group."""
    return "WORLD_SIZE" in os.environ


def rank() -> int:
    """This process's rank, read from the launcher's environment: known before the group is joined."""
    return int(os.environ["RANK"]) if launched() else 0


def world_size() -> int:
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def join(device: str) -> str:
    """Join the launcher's process group (gloo on the CPU; nccl on CUDA, one GPU per process, the LOCAL_RANK-th);
    returns the device this process trains on."""
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        dist.init_process_group("gloo")
    return device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (rank 0 has written what the others read next)."""
    if dist.is_initialized():
        dist.barrier()


def data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel (its backward averages the gradients over the ranks), or the
    model itself outside a group."""
    if not dist.is_initialized():
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `values` over the ranks (the same tensor on every rank)."""
    if not dist.is_initialized():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def gather_rows(part: np.ndarray) -> np.ndarray:
    """Every rank's `part` stacked in rank order, on every rank (the parts of a contiguous split of the rows)."""
    if not dist.is_initialized():
        return part
    parts: list[np.ndarray | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    return np.concatenate(parts)
