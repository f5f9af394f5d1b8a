"""``--time-budget``: decide a run's step count so that the whole run ends inside a wall time.

The budget is a cap: a run trains its epochs (or ``train.steps``) when they fit, and as many
steps as fit when they do not.

:func:`apply_time_budget` is called by :func:`resnetlab.run.train` once the data and the network
are built.  It times real training steps (:func:`resnetlab.engine.budget.calibrate`), plans the
steps that fit (:func:`~resnetlab.engine.budget.plan_steps`) and returns the run's plan with
``train.steps`` (and ``train.epochs`` to cover it) filled in.  Its config is what the run
trains and saves as ``config.yaml``, so ``resnetlab train --config RUN/config.yaml`` reruns the
same steps without measuring again (and on another machine takes as long as it takes).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

from torch import nn

from resnetlab.engine import distributed
from resnetlab.engine.budget import MIN_STEPS, Calibration, calibrate, plan_steps
from resnetlab.engine.config import RunConfig
from resnetlab.engine.plan import Deadline, RunPlan
from resnetlab.engine.replan import plan_check
from resnetlab.engine.schedules import warmup_steps
from resnetlab.run.build import flip_tta_applies
from resnetlab.utils.duration import format_duration, parse_duration
from resnetlab.utils.errors import ConfigError
from resnetlab.utils.notices import say

# plan_steps' fixed cost of every run (final checkpoint load, plots, exit), in seconds
FIXED_S = 4.0

__all__ = ["apply_time_budget", "budget_label"]


def apply_time_budget(plan: RunPlan, model: nn.Module, bundle: Any, *, spent_s: float,
                      late_freeze: float | None = None) -> RunPlan:
    """``plan`` with its step count fixed by ``train.time_budget`` (``plan`` itself when there
    is no budget or ``train.steps`` is already decided).  ``spent_s``: wall seconds the run has
    used so far (reading the data); the calibration's own time is added.  ``late_freeze``:
    the fraction from which the stem and first stage train frozen if the budget cuts the run
    short of its epochs (the data's own, ``train.late_freeze: default``): the run is timed so."""
    cfg = plan.config
    tc = cfg.train
    if tc.time_budget is None or tc.steps is not None:
        return plan
    budget_s = parse_duration(tc.time_budget)
    started = time.perf_counter() - spent_s  # where the budget counts from
    per_epoch = plan.steps_per_epoch
    evals = [loader for loader in (bundle.val, bundle.test) if _size(loader)]
    _check_room(tc.time_budget, budget_s, spent_s)
    cal = calibrate(model, bundle.train, next(iter(evals[0]))[0] if evals else None,
                    plan if late_freeze is None else plan.with_late_freeze(late_freeze),
                    budget_s=budget_s)
    val_images, final_images = _evaluated_images(cfg, bundle)

    def fits(c: Calibration) -> int:  # a cap: never more than the epochs asked for
        spent = spent_s + c.calibrate_s + c.startup_s  # the run pays the warm-ups' extra again
        return min(plan.schedule_steps, plan_steps(budget_s, spent, c, per_epoch=per_epoch,
                                                   val_images=val_images, final_images=final_images))

    def unfrozen(c: Calibration) -> Calibration:  # the phases a freeze skipped, timed now
        return calibrate(model, bundle.train, None, plan, budget_s=budget_s, timed=c)

    steps, cal, late_freeze = _steps_and_freeze(plan, cal, late_freeze, fits, unfrozen)
    plan = plan.with_late_freeze(late_freeze) if late_freeze is not None else plan
    spent_s += cal.calibrate_s + cal.startup_s
    if steps < min(MIN_STEPS, plan.schedule_steps):  # cut below a training run's length
        raise ConfigError(_too_short(tc.time_budget, steps, cal, spent_s))
    if distributed.is_main():
        say(f"time budget {format_duration(budget_s)}: "
            f"{_plan_label(plan, cal, steps, late_freeze, spent_s)}")
    deadline = Deadline(budget_s=budget_s, started=started, size_step_s=cal.size_step_s,
                        frozen_step_s=cal.frozen_step_s,
                        eval_image_s=cal.eval_image_s, val_images=val_images,
                        final_images=final_images, max_steps=tc.max_steps, cap=plan.schedule_steps)
    planned = dataclasses.replace(plan.with_steps(steps), deadline=deadline)
    check = plan_check(planned, cal, budget_s=budget_s, started=started,
                       val_images=val_images, final_images=final_images,
                       cap=plan.schedule_steps)
    if check is None:
        return planned
    # the warm-up in steps, so that the re-plan leaves it (and every step before it) as it is
    warmup = warmup_steps(planned.config.schedule, steps, per_epoch)
    return planned.with_steps(steps, warmup_steps=warmup, check=check)


def _evaluated_images(cfg: RunConfig, bundle: Any) -> tuple[int, int]:
    """Images this rank evaluates in each validation pass and in the final evaluation (the
    test set, or validation without one, times the flip TTA's two views).  Each of N
    data-parallel ranks evaluates every N-th batch in the time the sample gave one rank for
    one image: a rank's share is what it waits for."""
    views = 2 if flip_tta_applies(cfg, bundle) else 1
    final = min(_size(bundle.test) or _size(bundle.val), cfg.data.test_size or math.inf)
    return _rank_share(_size(bundle.val)), _rank_share(final * views)


def _check_room(budget: Any, budget_s: float, spent_s: float) -> None:
    if spent_s + FIXED_S >= budget_s:  # loading alone used it up: say so before timing
        raise ConfigError(f"--time-budget {budget}: only 0 training steps fit (starting "
                          f"and reading the data took {spent_s:.0f} s of it); give more time, or less data "
                          "(--train-size)")


def _steps_and_freeze(plan: RunPlan, cal: Calibration, late_freeze: float | None,
                      fits: Callable[[Calibration], int],
                      unfrozen: Callable[[Calibration], Calibration]) -> tuple[int, Calibration, float | None]:
    """The steps that fit (``fits``), the calibration they were planned with, and the late
    freeze (``cal`` timed the run frozen from ``late_freeze``, if given): adopted only when
    the epochs do not fit with every layer training (frozen steps are cheaper; when they fit,
    the freeze would cost accuracy for time the run does not need).  Whether they do is timed
    (``unfrozen``) only when they fit frozen: on a CPU where they do not, steps that train
    every layer cost more still, and timing them would take seconds from the run (2-3 s of
    a 5-minute AVX2 run).  Every rank takes rank 0's decisions (under torchrun the timing
    trains in DDP: every rank must time the same steps)."""
    steps = fits(cal)
    if distributed.broadcast_object(late_freeze is not None and steps >= plan.schedule_steps):
        every = unfrozen(cal)  # its mean: every layer training throughout
        if fits(every) >= plan.schedule_steps:
            cal, late_freeze = every, None
        else:  # every sample, planned at the frozen run's mean (timed first, unchanged)
            cal = dataclasses.replace(every, step_s=cal.step_s)
        steps = fits(cal)
    steps, late_freeze = distributed.broadcast_object((int(steps), late_freeze))
    return steps, cal, late_freeze


def _plan_label(plan: RunPlan, cal: Calibration, steps: int, late_freeze: float | None,
                spent_s: float) -> str:
    """``one step 122 ms (20 px 101, ...), evaluation 0.38 ms/image, 11 s spent so far ->
    2000 steps (4.7 epochs), stem and first stage frozen from 67% of them``."""
    every = "" if steps < plan.schedule_steps else ", all that were asked for"
    frozen = "" if late_freeze is None else f", stem and first stage frozen from {late_freeze:.0%} of them"
    return (f"one step {1000 * cal.step_s:.0f} ms{_phase_label(cal, late_freeze is not None)}, "
            f"evaluation {1000 * cal.eval_image_s:.2f} ms/image, {spent_s:.0f} s spent so far -> {steps} "
            f"steps ({steps / plan.steps_per_epoch:.1f} epochs{every}){frozen}")


def _phase_label(cal: Calibration, frozen: bool) -> str:
    """`` (20 px 97, 24 px 132, 28 px 197, 28 px frozen 128 ms)``: each phase's sample, when
    there are several (the frozen ones when the run freezes)."""
    phases = [(size, False, s) for size, s in cal.size_step_s]
    phases += [(size, True, s) for size, s in cal.frozen_step_s] if frozen else []
    if len(phases) < 2:
        return ""
    return " (" + ", ".join(f"{'' if size is None else f'{size} px '}{'frozen ' if frozen else ''}"
                            f"{1000 * s:.0f}" for size, frozen, s in phases) + " ms)"


def _rank_share(images: float) -> int:
    """The images one of this run's data-parallel ranks evaluates out of ``images``."""
    return math.ceil(images / distributed.dist_info().world_size)


def _size(loader: Any) -> int:
    return int(getattr(loader, "num_samples", 0) or 0) if loader is not None else 0


def _too_short(budget: Any, steps: int, cal: Calibration, spent_s: float) -> str:
    return (f"--time-budget {budget}: only {steps} training steps fit (one step takes "
            f"{1000 * cal.step_s:.0f} ms here and {spent_s:.0f} s go to loading, timing and "
            f"warming up); give more time, or a smaller --model or --batch-size")


def budget_label(cfg: RunConfig, steps: int, epochs: float) -> str | None:
    """``budget 5 min: 1840 steps, 4.3 epochs`` for a run with a time budget, else None."""
    if cfg.train.time_budget is None:
        return None
    return f"budget {format_duration(parse_duration(cfg.train.time_budget))}: {steps} steps, {epochs:.1f} epochs"
