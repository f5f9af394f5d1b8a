"""torchrun / DDP support.  Outside torchrun every function here is a cheap no-op.

How a run is sharded: every rank builds the *same* loaders with the *same* seed (the CLI does
nothing special).  :func:`fit` then gives rank ``r`` the batches ``r, r + W, r + 2W, ...`` of each
epoch (``W`` = world size), so ranks see disjoint data, the global batch is ``W x batch_size``
and every rank runs the same number of steps (no DDP hang on an uneven last batch).  A loader
that shards itself can say so with an attribute ``world_size`` equal to the world size; fit
then uses its batches as they come.  Only rank 0 writes files or prints; metrics are summed
over ranks with :func:`all_reduce_sum`.

Launch: ``torchrun --nproc-per-node 4 -m resnetlab train ...`` (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo", "init_distributed", "dist_info", "is_main", "all_reduce_sum", "all_reduce_min",
    "wrap_ddp",
    "broadcast_object", "barrier", "cleanup",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank and world size of this process (``DistInfo()`` when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def is_main() -> bool:
    """True on rank 0 (and when not distributed): the one process that writes and prints."""
    return dist_info().is_main


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; return (info, this rank's device).

    On CUDA each process takes GPU ``LOCAL_RANK`` and the nccl backend; elsewhere gloo.
    Call it once at the entry point, before building data and model.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist_info(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return dist_info(), device


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` when distributed, else ``model`` unchanged."""
    if dist_info().world_size == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all ranks (no-op when not distributed); returns it."""
    if dist_info().world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Minimum of ``tensor`` over all ranks, in place (e.g. "every rank's loss is finite")."""
    if dist_info().world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the run directory chosen by rank 0)."""
    if dist_info().world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist_info().world_size > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call at the end of the entry point)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
