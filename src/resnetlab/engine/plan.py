"""The checked, immutable plan of one training run (issue 19, item 2: validate once, at the edge).

A :class:`RunPlan` is made once, before any work starts, from a config that
:func:`~resnetlab.engine.config.validate` has passed and from what the config alone cannot
say: the data (batches per epoch, whether there is a validation split), the task and the model
(trainable parameters, a fine-tune's learning-rate scales).  :func:`make_plan` holds every check
that needs them, each with its one-line error; the loop, the optimiser, the schedule and the
tracker read the plan and check nothing again.

The plan is frozen and keeps its own copy of the config, so a caller that changes its
``RunConfig`` afterwards (a notebook, a sweep) changes nothing in a run that is planned.
"""

from __future__ import annotations

import copy
import dataclasses
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from resnetlab.engine.config import RunConfig, TrainConfig
from resnetlab.engine.task import Task
from resnetlab.engine.tracker import pick_metric
from resnetlab.utils.errors import ConfigError

__all__ = ["RunPlan", "BudgetCheck", "Deadline", "make_plan", "steps_per_epoch", "planned_steps",
           "stop_step"]


@dataclass(frozen=True)
class BudgetCheck:
    """A time-budgeted run's second look at its own length (:func:`resnetlab.engine.replan.
    recheck`): the steps from ``from_step`` to ``at_step`` are timed as the run trains them,
    and the step count is planned again from that rate instead of the short sample taken
    before the run.  Both steps come before anything that depends on the length (the end of
    the warm-up, the first resize, the first epoch's end), so a rerun of the saved config with
    the final count trains exactly the same steps.

    ``started``: the ``time.perf_counter()`` reading the budget counts from; ``size_step_s``:
    the sample's seconds per step at each input size (None: the data's own), which the check
    scales, with ``eval_image_s`` (the sample's seconds per evaluated image), by the run's own
    rate at the first size against the sample's; ``val_images`` and
    ``final_images``: what each validation and the final evaluation (x TTA views) read;
    ``cap``: the most steps the run may take (its epochs).
    """

    budget_s: float
    started: float
    from_step: int
    at_step: int
    size_step_s: tuple[tuple[int | None, float], ...]
    eval_image_s: float
    val_images: int
    final_images: int
    cap: int
    # the sample's seconds per step at each input size trained frozen (train.late_freeze)
    frozen_step_s: tuple[tuple[int | None, float], ...] = ()


@dataclass(frozen=True)
class Deadline:
    """A time-budgeted run's end, watched as it trains (:func:`resnetlab.engine.replan.
    deadline_stop`): when the machine slows down so far after the plan that the run would end
    past ``budget_s``, training stops at the last step that still ends inside it (as
    ``train.budget_stop``, saved in ``config.yaml``; the schedule stays as planned).  The fields
    are :class:`BudgetCheck`'s; ``max_steps``: the run's own ``train.max_steps`` (None: none),
    below which it never stops later.  In the run's last phase its end may also move once
    (:func:`resnetlab.engine.replan.reaim`, ``train.budget_end``), to ``cap`` steps at most
    (the epochs asked for; None: no later than planned).
    """

    budget_s: float
    started: float
    size_step_s: tuple[tuple[int | None, float], ...]
    eval_image_s: float
    val_images: int
    final_images: int
    max_steps: int | None = None
    frozen_step_s: tuple[tuple[int | None, float], ...] = ()
    cap: int | None = None


@dataclass(frozen=True)
class RunPlan:
    """What one run will do, decided and checked: model, data, task, optimiser, schedule, budget.

    ``config``: the plan's own copy of the checked config (the engine reads it, nothing writes
    it). ``steps_per_epoch``: optimiser steps per epoch on each process; ``schedule_steps``:
    where the learning-rate schedule (and progressive resizing) ends, ``train.steps`` when a
    time budget fixed it, else epochs x steps per epoch; ``total_steps``: where training stops
    (``train.max_steps`` or a deadline's ``train.budget_stop`` may end it sooner); ``metric``: the ``metrics.csv`` column that picks
    the best checkpoint; ``lr_scales``: a fine-tune's per-parameter learning-rate scales.
    """

    config: RunConfig
    task: Task
    steps_per_epoch: int
    schedule_steps: int
    total_steps: int
    metric: str
    has_val: bool
    world_size: int = 1
    lr_scales: Mapping[str, float] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    # a time-budgeted run's re-plan from its own first steps (None: its length is final)
    budget_check: BudgetCheck | None = None
    # a time-budgeted run's end, watched to the last step (None: no budget)
    deadline: Deadline | None = None

    def with_steps(self, steps: int, *, warmup_steps: int | None = None,
                   check: BudgetCheck | None = None) -> RunPlan:
        """This plan with its length fixed to ``steps`` optimiser steps (what ``--time-budget``
        decides): ``train.steps`` and the epochs that hold them.  ``warmup_steps`` fixes the
        warm-up in steps (as ``schedule.warmup_epochs``), so that it no longer depends on the
        length; ``check``: the run's re-plan, if one is to come."""
        train = dataclasses.replace(self.config.train, steps=steps, budget_stop=None, budget_end=None,
                                    epochs=-(-steps // self.steps_per_epoch))
        schedule = self.config.schedule
        if warmup_steps is not None:
            schedule = dataclasses.replace(schedule, warmup_frac=0.0,
                                           warmup_epochs=warmup_steps / self.steps_per_epoch)
        config = copy.deepcopy(dataclasses.replace(self.config, train=train, schedule=schedule))
        return dataclasses.replace(self, config=config, schedule_steps=steps,
                                   total_steps=stop_step(train, steps), budget_check=check)

    def with_late_freeze(self, late_freeze: float | None) -> RunPlan:
        """This plan with ``train.late_freeze`` set: what a time budget decides for the
        recipe's ``default`` (the data's own when the budget cuts the run short)."""
        train = dataclasses.replace(self.config.train, late_freeze=late_freeze)
        return dataclasses.replace(self, config=copy.deepcopy(dataclasses.replace(self.config, train=train)))

    @property
    def end_step(self) -> int:
        """Where the schedule ends: ``schedule_steps``, or where a time budget moved the end
        (``train.budget_end``)."""
        moved = self.config.train.budget_end
        return moved[1] if moved is not None else self.schedule_steps

    def with_end(self, at: int, end: int) -> RunPlan:
        """This plan with its end moved to step ``end`` from step ``at`` on
        (``train.budget_end``: the rest of the schedule stretched or squeezed to end there,
        :func:`~resnetlab.engine.schedules.stretch`) and the epochs that hold it: what a time
        budget decides from the run's own rate in its last phase."""
        epochs = max(self.config.train.epochs, -(-end // self.steps_per_epoch))
        train = dataclasses.replace(self.config.train, budget_end=(at, end), budget_stop=None,
                                    epochs=epochs)
        config = copy.deepcopy(dataclasses.replace(self.config, train=train))
        return dataclasses.replace(self, config=config,
                                   total_steps=stop_step(train, self.schedule_steps))

    def with_stop(self, stop: int | None) -> RunPlan:
        """This plan stopping at step ``stop`` (``train.budget_stop``; None: where it planned
        to), the schedule itself unchanged: what a time budget's deadline decides."""
        train = dataclasses.replace(self.config.train, budget_stop=stop)
        config = copy.deepcopy(dataclasses.replace(self.config, train=train))
        return dataclasses.replace(self, config=config,
                                   total_steps=stop_step(train, self.schedule_steps))


def make_plan(cfg: RunConfig, train_loader: Iterable, *, task: Task, has_val: bool,
              model: nn.Module | None = None, world_size: int = 1,
              lr_scales: Mapping[str, float] | None = None) -> RunPlan:
    """Check what ``cfg`` asks of this data, task and model, and fix the run's numbers.

    ``cfg`` must have passed :func:`~resnetlab.engine.config.validate` (the run API and
    :func:`~resnetlab.engine.fit` do that first).  One-line :class:`ConfigError` for a loader
    without ``len()`` or without a batch per process, ``train.steps`` beyond the epochs,
    ``--early-stop`` without a validation split, and a model with nothing to train.
    ``progressive_sizes: default`` (the data's own sizes, resolved by :mod:`resnetlab.run`)
    trains at full size here.
    """
    if cfg.data.progressive_sizes == "default":  # the data's own sizes are resnetlab.run's to
        cfg = copy.deepcopy(cfg)                 # resolve; the engine alone knows none: full size
        cfg.data.progressive_sizes = []
    if cfg.train.late_freeze == "default":  # likewise the data's own late freeze: none here
        cfg = copy.deepcopy(cfg)
        cfg.train.late_freeze = None
    per_epoch = steps_per_epoch(train_loader, world_size)
    schedule = planned_steps(cfg.train, per_epoch)
    metric = pick_metric(cfg.train, has_val, regression=task.regression)
    if model is not None and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("the model has no trainable parameters (all requires_grad=False)")
    if model is not None and cfg.train.late_freeze is not None:
        problem = late_freeze_problem(model)
        if problem:
            raise ConfigError(f"--late-freeze {cfg.train.late_freeze}: {problem}; "
                              "pass --late-freeze none")
    return RunPlan(config=copy.deepcopy(cfg), task=task, steps_per_epoch=per_epoch,
                   schedule_steps=schedule,
                   total_steps=stop_step(cfg.train, schedule),
                   metric=metric, has_val=has_val, world_size=world_size,
                   lr_scales=types.MappingProxyType(dict(lr_scales or {})))


def phase_samples(sample: Any) -> dict[tuple[int | None, bool], float]:
    """``{(input size, frozen): seconds per step}`` from a sample's ``size_step_s`` and
    ``frozen_step_s`` (a :class:`Deadline`, :class:`BudgetCheck` or calibration)."""
    return ({(size, False): s for size, s in sample.size_step_s}
            | {(size, True): s for size, s in sample.frozen_step_s})


def late_freeze_problem(model: nn.Module) -> str | None:
    """Why ``model`` cannot train with ``--late-freeze`` (None: it can).  The freeze takes the
    stem and first stage of ``named_stages()`` (DESIGN.md's model interface): the model must
    have them, and a later stage besides its head."""
    named_stages = getattr(model, "named_stages", None)
    names = [name for name, _ in named_stages()] if callable(named_stages) else []
    if len(names) >= 4:  # the stem, the first stage, a stage that keeps training, the head
        return None
    has = f"its stages are {', '.join(names)}" if names else "it has no named_stages()"
    return (f"{type(model).__name__} needs a stem, a first stage and a later one to keep "
            f"training ({has})")


def stop_step(tc: TrainConfig, schedule: int) -> int:
    """Where training stops in a schedule of ``schedule`` steps: its end (or where a time
    budget moved it, ``train.budget_end``), or sooner at ``train.max_steps`` (smoke tests) or
    ``train.budget_stop`` (a time budget's deadline)."""
    end = tc.budget_end[1] if tc.budget_end is not None else schedule
    return min(end, tc.max_steps or end, tc.budget_stop or end)


def steps_per_epoch(loader: Iterable, world_size: int = 1) -> int:
    """Optimiser steps per epoch on each of ``world_size`` processes (a one-line error for
    loaders without ``len()`` or with too few batches)."""
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError("the training loader has no len(); pass a sized iterable of (x, y) "
                          "batches (a list, a DataLoader or a resnetlab loader)") from None
    if world_size > 1 and getattr(loader, "world_size", 1) != world_size:
        n //= world_size
    if n < 1:
        raise ConfigError(f"the training set gives {n} batches per epoch on each of {world_size} "
                          "process(es); lower --batch-size or use more data")
    return n


def planned_steps(tc: TrainConfig, per_epoch: int) -> int:
    """The run's length in steps, where the schedule ends: ``train.steps`` when set (what
    ``--time-budget`` decides), else ``epochs`` x ``per_epoch``."""
    steps = tc.epochs * per_epoch if tc.steps is None else tc.steps
    if steps > tc.epochs * per_epoch:
        raise ConfigError(f"--set train.steps={tc.steps} needs --epochs >= "
                          f"{-(-tc.steps // per_epoch)} ({per_epoch} steps per epoch)")
    if tc.budget_end is not None:
        at, end = tc.budget_end
        if at >= steps or end > tc.epochs * per_epoch:
            raise ConfigError(f"train.budget_end [{at}, {end}] must move the end from a step "
                              f"before the schedule's end ({steps}) to one inside --epochs "
                              f"{tc.epochs} ({per_epoch} steps per epoch)")
    return steps
