"""Everything one training run holds while it trains, built in one place.

:func:`open_session` builds a :class:`TrainSession` from a model, loaders and a config; the
loop (:mod:`resnetlab.engine.loop`) and the checkpoints (:mod:`resnetlab.engine.checkpointing`)
work on it.  Each field has one meaning: ``net`` is what trains (DDP and/or compiled),
``eval_net`` what is evaluated (the EMA weights when there are any).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.engine import distributed
from resnetlab.engine.clock import Clock
from resnetlab.engine.config import RunConfig
from resnetlab.engine.ema import ModelEma
from resnetlab.engine.guard import NonFiniteGuard
from resnetlab.engine.logging import MetricsWriter, ProgressDisplay
from resnetlab.engine.metrics import StepRecorder, StepStat
from resnetlab.engine.optim import build_optimizer
from resnetlab.engine.plan import RunPlan, steps_per_epoch
from resnetlab.engine.runtime import Runtime, prepare_runtime
from resnetlab.engine.schedules import (
    input_size_schedule,
    late_freeze_schedule,
    lr_schedule,
    stretch,
)
from resnetlab.engine.state import TrainProgress
from resnetlab.engine.task import Task
from resnetlab.engine.tracker import Tracker

__all__ = ["TrainSession", "Window", "open_session", "steps_per_epoch", "epoch_batches",
           "late_freeze_params"]


@dataclass
class Window:
    """Loss sum, correct predictions and samples of the finite steps since the last reset."""

    loss_sum: float = 0.0
    hits: float = 0.0
    count: int = 0

    def add(self, s: StepStat) -> None:
        self.loss_sum += s.loss * s.size
        self.hits += s.hits
        self.count += s.size

    def take(self) -> Window:
        """This window's totals; the window starts over."""
        out = Window(self.loss_sum, self.hits, self.count)
        self.loss_sum, self.hits, self.count = 0.0, 0.0, 0
        return out


@dataclass
class TrainSession:
    """The state of one run of :func:`~resnetlab.engine.fit` (see the module docstring)."""

    # the run's checked numbers; cfg, task, steps_per_epoch and total_steps are read from it
    plan: RunPlan
    run_dir: Path
    rt: Runtime
    model: nn.Module
    net: nn.Module
    eval_base: nn.Module
    train_loader: Iterable
    val_loader: Iterable | None
    num_classes: int
    optimizer: torch.optim.Optimizer
    lr_fn: Callable[[int], float]
    # progressive resizing: the longer image side for each step (None: the data's own size)
    input_size: Callable[[int], int | None]
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    guard: NonFiniteGuard
    recorder: StepRecorder
    tracker: Tracker
    writer: MetricsWriter
    display: ProgressDisplay
    extra_meta: dict[str, Any] = field(default_factory=dict)
    tta: Callable | None = None
    on_epoch_end: Callable[[dict[str, Any]], Any] | None = None
    state: TrainProgress = field(default_factory=TrainProgress)
    window: Window = field(default_factory=Window)
    clock: Clock = field(default_factory=Clock)
    # time.perf_counter() at the budget check's first timed step (engine.replan)
    budget_mark: float | None = None
    # the deadline's timing window: (first step, its time.perf_counter() or None until the
    # window starts, input size and frozen or not); None at each epoch's start
    # (engine.replan.deadline_stop)
    deadline_mark: tuple[int, float | None, tuple[int | None, bool]] | None = None
    # train.late_freeze: whether a step trains with the stem and first stage frozen, and the
    # parameters the freeze turned off while it holds (None: not frozen now)
    late_frozen: Callable[[int], bool] = field(default_factory=lambda: late_freeze_schedule(None, 1))
    frozen_late: list[nn.Parameter] | None = None

    def adopt(self, plan: RunPlan) -> None:
        """Train to ``plan`` from here on: a time budget's re-plan, which changes only the
        length (the steps trained so far are the same under either plan)."""
        self.plan = plan
        self.lr_fn, self.input_size, self.late_frozen = step_schedules(plan)
        self.guard.lr_fn = self.lr_fn
        self.display.set_length(plan.total_steps, plan.config.train.epochs)

    def phase(self, step: int) -> tuple[int | None, bool]:
        """What a step's cost depends on: its input size, and whether it trains frozen."""
        return self.input_size(step), self.late_frozen(step)

    def freeze_late(self, frozen: bool) -> None:
        """The stem and first stage stop training (True) or train again (False):
        ``train.late_freeze``.  Only the parameters that were training are turned off and
        back on (a fine-tune's own ``--freeze`` stays), and under torchrun the DDP wrapper is
        built anew, since it fixes at construction which parameters send gradients."""
        if frozen == (self.frozen_late is not None):
            return
        if frozen:
            self.frozen_late = [p for p in late_freeze_params(self.model) if p.requires_grad]
        for p in self.frozen_late or []:
            p.requires_grad_(not frozen)
        if not frozen:
            self.frozen_late = None
        if self.rt.dist.world_size > 1:
            self.net = _training_net(self.model, self.rt, self.cfg.train.compile)

    @property
    def cfg(self) -> RunConfig:
        return self.plan.config

    @property
    def task(self) -> Task:
        """What is learned: the loss and metrics (a classification or a regression)."""
        return self.plan.task

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.plan.total_steps

    @property
    def main(self) -> bool:
        return self.rt.dist.is_main

    @property
    def eval_net(self) -> nn.Module:
        """What validation evaluates and ``best`` stores: the EMA weights when kept."""
        return self.ema.module if self.ema is not None else self.eval_base

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / "checkpoints"


def epoch_batches(loader: Iterable, epoch: int, start: int = 0, steps: int | None = None,
                  rank: int = 0, world_size: int = 1) -> Iterator:
    """Batches ``start, start + 1, ...`` of ``epoch`` for this rank.

    Loaders with an ``epoch(epoch, start=)`` method (resnetlab's) jump straight to ``start``;
    other iterables are iterated and the first batches skipped.  With ``world_size > 1`` rank
    ``r`` takes every ``world_size``-th batch from ``r`` on (see :mod:`distributed`).
    """
    shard = world_size > 1 and getattr(loader, "world_size", 1) != world_size
    first = start * world_size + rank if shard else start
    if shard and getattr(loader, "strided", False):
        # the loader reads only this rank's batches (a streaming loader decodes no others)
        it = iter(loader.epoch(epoch, start=first, every=world_size))
    elif hasattr(loader, "epoch"):
        it = iter(loader.epoch(epoch, start=first))
    else:
        it = itertools.islice(iter(loader), first, None)
    if shard and not getattr(loader, "strided", False):
        it = itertools.islice(it, 0, None, world_size)
    return itertools.islice(it, None if steps is None else max(steps - start, 0))


def late_freeze_params(model: nn.Module) -> list[nn.Parameter]:
    """The parameters ``train.late_freeze`` freezes: the stem's and the first stage's
    (``named_stages()``, DESIGN.md's model interface)."""
    stages = list(model.named_stages())[:2]
    return [p for _, stage in stages for p in stage.parameters()]


def _placed(model: nn.Module, rt: Runtime, compile: bool,
            sync_bn: bool = False) -> tuple[nn.Module, nn.Module]:
    """The module that trains (DDP under torchrun, SyncBN and compiled on request) and the one
    that evaluates (never DDP: evaluation shards its batches itself)."""
    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    if sync_bn:
        distributed.convert_sync_bn(model, rt.device)
    net = _training_net(model, rt, compile)
    if rt.dist.world_size == 1:
        return net, net
    return net, torch.compile(model) if compile else model


def _training_net(model: nn.Module, rt: Runtime, compile: bool) -> nn.Module:
    """``model`` as it trains: in DDP under torchrun, compiled on request."""
    base = distributed.wrap_ddp(model, rt.device)
    return torch.compile(base) if compile else base


def step_schedules(plan: RunPlan) -> tuple[Callable[[int], float], Callable[[int], int | None],
                                           Callable[[int], bool]]:
    """The learning rate, input size and late freeze of each step of ``plan``, stretched
    where a time budget moved the run's end (``train.budget_end``)."""
    cfg, steps, moved = plan.config, plan.schedule_steps, plan.config.train.budget_end
    return (stretch(lr_schedule(cfg.schedule, cfg.optim.lr, steps, plan.steps_per_epoch), steps, moved),
            stretch(input_size_schedule(cfg.data.progressive_sizes, steps), steps, moved),
            stretch(late_freeze_schedule(cfg.train.late_freeze, steps), steps, moved))


def open_session(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None,
                 plan: RunPlan, run_dir: Path, *, num_classes: int,
                 progress: bool | None = None, **extra: Any) -> TrainSession:
    """Resolve the runtime and build the optimiser, schedule, EMA, guard and writers that
    ``plan`` (checked by :func:`~resnetlab.engine.plan.make_plan`) describes.

    ``extra``: ``extra_meta``, ``tta``, ``on_epoch_end`` (see :func:`~resnetlab.engine.fit`).
    """
    cfg = plan.config
    tc, rt = cfg.train, prepare_runtime(cfg.train)
    per_epoch, total = plan.steps_per_epoch, plan.total_steps
    net, eval_base = _placed(model, rt, tc.compile, tc.sync_bn)
    optimizer = build_optimizer(model, cfg.optim, plan.lr_scales)
    lr_fn, input_size, late_frozen = step_schedules(plan)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype == torch.float16)
    return TrainSession(
        plan=plan, run_dir=run_dir, rt=rt, model=model, net=net, eval_base=eval_base,
        train_loader=train_loader, val_loader=val_loader, num_classes=num_classes,
        optimizer=optimizer, lr_fn=lr_fn,
        input_size=input_size,
        late_frozen=late_frozen,
        scaler=scaler, ema=ModelEma(model, tc.ema_decay) if tc.ema_decay else None,
        guard=NonFiniteGuard(model, optimizer, scaler, tc.max_nonfinite_steps, lr_fn),
        # the loop drains every log_every steps and at each epoch end
        recorder=StepRecorder(max(1, min(tc.log_every, per_epoch)), rt.device),
        tracker=Tracker(plan.metric, tc.early_stop_patience),
        writer=MetricsWriter(run_dir, enabled=rt.dist.is_main),
        display=ProgressDisplay(progress, total, tc.epochs, enabled=rt.dist.is_main), **extra)
