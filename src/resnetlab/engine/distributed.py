"""torchrun / DDP support.  Outside torchrun every function here is a cheap no-op.

How a run is sharded: every rank builds the *same* loaders with the *same* seed (the CLI does
nothing special).  :func:`fit` then gives rank ``r`` the batches ``r, r + W, r + 2W, ...`` of each
epoch (``W`` = world size), so ranks see disjoint data, the global batch is ``W x batch_size``
and every rank runs the same number of steps (no DDP hang on an uneven last batch).  A loader
with ``strided = True`` and ``epoch(e, start=, every=)`` (resnetlab's ``BatchLoader``) reads only
its rank's batches, so a streaming loader decodes nothing it does not train on: this is the
distributed sampler.  A loader that shards itself can say so with an attribute ``world_size``
equal to the world size; fit then uses its batches as they come.  Only rank 0 writes files or
prints; metrics are summed over ranks with :func:`all_reduce_sum`.  A checkpoint written by W
ranks resumes on any other number (:func:`map_batch`).

Launch: ``torchrun --nproc-per-node 4 -m resnetlab train ...`` (gloo on CPU, nccl on CUDA), or
``resnetlab train --nproc 4`` / ``resnetlab.run.train(cfg, world_size=4)``, which start torchrun.

Faults: every collective has a timeout (:func:`dist_timeout`, ``RESNETLAB_DIST_TIMEOUT``
seconds, default 300), and on gloo :func:`barrier` is a monitored barrier whose error names the
ranks that did not arrive, so a dead rank ends the job instead of hanging it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from resnetlab.utils.errors import ConfigError

__all__ = [
    "DistInfo", "init_distributed", "dist_info", "is_main", "all_reduce_sum", "all_reduce_min",
    "wrap_ddp", "broadcast_object", "barrier", "cleanup", "dist_timeout", "restart_count",
    "convert_sync_bn", "CpuSyncBatchNorm", "map_batch",
]

# Seconds a collective may wait for the other ranks before this rank gives up.  Long enough for
# rank 0's evaluation and checkpoint writes on a slow disk, short enough that a dead peer that
# the launcher did not notice still ends the job.
DEFAULT_TIMEOUT_S = 300.0


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
    timeout = datetime.timedelta(seconds=dist_timeout())
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    # After a torchrun restart the store can still hold the dead attempt's connection addresses;
    # keys of this attempt's own namespace never meet them.
    store = dist.PrefixStore(f"resnetlab/attempt{restart_count()}/", store)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world,
                            timeout=timeout, device_id=device if device.type == "cuda" else None)
    return dist_info(), device


def dist_timeout() -> float:
    """Collective timeout in seconds: ``RESNETLAB_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`."""
    text = os.environ.get("RESNETLAB_DIST_TIMEOUT", "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"RESNETLAB_DIST_TIMEOUT={text!r}: give the seconds a rank waits for "
                          "the others, e.g. 300")
    return value


def restart_count() -> int:
    """How often torchrun restarted this job (``--max-restarts``); 0 on the first attempt."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def map_batch(batch: int, saved_world: int, world: int) -> int:
    """This rank's position in the epoch when a checkpoint written by ``saved_world`` ranks
    resumes on ``world`` ranks.

    After ``batch`` steps on each of ``saved_world`` ranks the loader's batches
    ``0 .. batch * saved_world - 1`` are trained (rank ``r`` takes ``r, r + W, ...``).  The new
    ranks continue at the last whole round of ``world`` batches below that, so no batch is
    skipped and at most ``world - 1`` are trained twice.
    """
    return batch * saved_world // world


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
    """Wait for every rank.  On gloo a monitored barrier: a rank that does not arrive within
    :func:`dist_timeout` is named in the error instead of hanging the job."""
    if dist_info().world_size == 1:
        return
    if dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=dist_timeout()),
                               wait_all_ranks=True)
    else:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call at the end of the entry point)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the incoming gradients over ranks: the gradient
    of ``sum_r x_r`` with respect to each ``x_r`` is the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all ranks).

    ``torch.nn.SyncBatchNorm`` runs on GPUs only; this one all-reduces per-channel sums with a
    differentiable all-reduce (its backward all-reduces the gradients of the statistics), so on CPU/gloo ``W`` ranks x batch ``B`` normalise like one process with
    batch ``W x B``.  Two passes (mean, then squared deviations) keep the variance as exact as
    ``F.batch_norm``'s.  Same parameters and buffers as ``nn.BatchNorm*d``.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or dist_info().world_size == 1:
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = all_reduce(torch.tensor([xf.numel() / xf.shape[1]], device=x.device))
        mean = all_reduce(xf.sum(dims)) / count
        centred = xf - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / count
        self._update_running(mean.detach(), var.detach(), count)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        if not self.track_running_stats or self.running_mean is None:
            return
        self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * count / (count - 1).clamp_min(1)  # as F.batch_norm keeps it
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` computing global-batch statistics, in place (same
    parameters, buffers and state_dict keys): ``nn.SyncBatchNorm`` on CUDA, else
    :class:`CpuSyncBatchNorm`.  Does nothing outside torchrun (one rank has nothing to sync)."""
    if dist_info().world_size == 1:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.__class__ = CpuSyncBatchNorm  # keeps its tensors, hooks and train/eval mode
    return model
