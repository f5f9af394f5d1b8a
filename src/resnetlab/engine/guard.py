"""Skipping optimiser steps whose loss is NaN/inf, without a host sync per step."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from resnetlab.checkpoint import load_checkpoint, nonfinite_tensors
from resnetlab.engine import distributed
from resnetlab.engine.metrics import StepStat
from resnetlab.utils.errors import UserError

__all__ = ["TrainingDiverged", "NonFiniteGuard"]


class TrainingDiverged(UserError):
    """The loss was NaN/inf for ``max_nonfinite_steps`` steps in a row."""


class NonFiniteGuard:
    """Takes the optimiser step only when the loss is finite, and counts the skipped steps.

    With fused optimisers (what :func:`build_optimizer` makes on CPU/CUDA) the skip happens on
    the device: the fused kernel reads ``optimizer.found_inf`` (the protocol ``GradScaler``
    uses), so the loop never waits for the GPU.  The losses are read back at the loop's sync
    points (every ``log_every`` steps, checkpoints, epoch ends) and passed to :meth:`observe`,
    which counts skipped steps and raises :class:`TrainingDiverged` once ``limit`` came in a
    row.  A forward pass that produced NaN may also have written NaN into BatchNorm running
    statistics; :meth:`observe` puts back the last finite ones, so checkpoints stay good.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, limit: int, lr_fn: Callable[[int], float]):
        self.optimizer, self.scaler, self.limit, self.lr_fn = optimizer, scaler, max(1, limit), lr_fn
        fused = all(g.get("fused") for g in optimizer.param_groups)
        # GradScaler (fp16) already skips steps with non-finite gradients and owns found_inf.
        self.device_gate = fused and not scaler.is_enabled()
        self.world_size = distributed.dist_info().world_size
        self.buffers = [b for b in model.buffers() if b.is_floating_point()]
        self.snapshot = [b.detach().clone() for b in self.buffers]
        self.total, self.streak, self.last_finite = 0, 0, math.nan

    def step(self, loss: torch.Tensor) -> None:
        """``scaler.step(optimizer)`` unless the loss is non-finite (then nothing changes)."""
        finite = torch.isfinite(loss.detach())
        if self.world_size > 1:  # one rank's NaN reaches every rank through the gradient all-reduce
            finite = distributed.all_reduce_min(finite.to(torch.uint8)).bool()
        if self.device_gate:
            self.optimizer.found_inf = torch.where(finite, 0.0, 1.0)
            self.scaler.step(self.optimizer)
        elif self.scaler.is_enabled() or finite.item():  # host sync only for unfused optimisers
            self.scaler.step(self.optimizer)
        self.scaler.update()

    def observe(self, stats: Sequence[StepStat], last_good: Path | None) -> None:
        """Count the non-finite steps among ``stats``; raise once ``limit`` came in a row."""
        skipped = False
        for s in stats:
            if math.isfinite(s.loss):
                self.streak, self.last_finite = 0, s.loss
                continue
            skipped = True
            self.total += 1
            self.streak += 1
            if self.streak >= self.limit:
                raise TrainingDiverged(self._message(s.step, last_good))
        if skipped:
            self._repair_buffers()
        self.take_snapshot()

    def _message(self, step: int, last_good: Path | None) -> str:
        where = "no checkpoint was saved yet"
        if last_good is not None:
            where = (f"the last good checkpoint is {last_good}" if _is_finite(last_good) else
                     f"the last checkpoint {last_good} holds NaN/inf weights too (start a new run)")
        return (f"training stopped: the loss was NaN/inf for {self.limit} steps in a row, reaching "
                f"the limit at step {step} (lr {self.lr_fn(step - 1):.4g}); last finite loss "
                f"{self.last_finite:.4g}; {where}; try a lower --lr, --clip-grad or --precision fp32")

    @torch.no_grad()
    def _repair_buffers(self) -> None:
        for buf, good in zip(self.buffers, self.snapshot, strict=True):
            if not torch.isfinite(buf).all():
                buf.copy_(good)

    @torch.no_grad()
    def take_snapshot(self) -> None:
        """Remember the current (finite) buffers; call after loading a checkpoint too."""
        if self.buffers:
            torch._foreach_copy_(self.snapshot, self.buffers)

    def reset(self, total: int) -> None:
        """Continue counting from ``total`` skipped steps (after a resume)."""
        self.total, self.streak = total, 0

    def close(self) -> None:
        if hasattr(self.optimizer, "found_inf"):
            del self.optimizer.found_inf


def _is_finite(checkpoint: Path) -> bool:
    """Whether every floating-point weight in ``checkpoint`` is finite.  New saves refuse
    non-finite weights; this catches checkpoints written before that check (or edited)."""
    try:
        loaded = load_checkpoint(checkpoint, train_state=False)
    except UserError:
        return False
    return not nonfinite_tensors(loaded.model_state)
