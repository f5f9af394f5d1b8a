"""Fit a run into a wall-clock budget: time a few real training steps, then fix the step count.

``--time-budget 5m`` means the whole run (data, training, every validation, checkpoints, the
final test evaluation and the plots) should end inside five minutes.  :func:`calibrate` times
training steps and evaluation batches of the real network, data and recipe on a throw-away copy
(so the run itself starts from step 0 with its final schedule and a rerun of the saved
``config.yaml`` trains exactly the same steps); :func:`plan_steps` turns the rates into a step
count.  :mod:`resnetlab.run.budget` wires both into a run.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from resnetlab.engine import distributed
from resnetlab.engine.config import RunConfig
from resnetlab.engine.loop import folded_for_eval, train_batch
from resnetlab.engine.plan import RunPlan, make_plan, phase_samples
from resnetlab.engine.replan import EPOCH_S
from resnetlab.engine.runtime import global_flags, restore_flags, to_device
from resnetlab.engine.schedules import run_phases
from resnetlab.engine.session import epoch_batches, open_session
from resnetlab.engine.task import Classification
from resnetlab.utils.device import autocast
from resnetlab.utils.errors import ConfigError

__all__ = ["Calibration", "calibrate", "plan_steps", "MIN_STEPS"]

# Fewer steps than this is not a training run; the budget is too small for the recipe.
MIN_STEPS = 20


@dataclass(frozen=True)
class Calibration:
    """Seconds per training step and per evaluated image (one view), as measured;
    ``startup_s``: what the first (warm-up) steps took beyond ``step_s`` each (oneDNN primitive
    creation, ``torch.compile``), which the run itself pays again."""

    step_s: float
    eval_image_s: float
    measured_steps: int
    calibrate_s: float
    startup_s: float = 0.0
    # seconds per step at each input size timed ((None, step_s): the data's own size only),
    # and at each size trained with the stem and first stage frozen (train.late_freeze)
    size_step_s: tuple[tuple[int | None, float], ...] = ()
    frozen_step_s: tuple[tuple[int | None, float], ...] = ()


# Calibration gets at most this share of the budget (at least 2 s): a 60 s budget must be
# refused or planned in seconds, not after minutes of timing (issue 22, item 15).
CALIBRATION_SHARE = 0.1


def calibrate(model: nn.Module, train_loader: Iterable, eval_batch: torch.Tensor | None,
              plan: RunPlan | RunConfig, *, steps: int = 10, warmup: int = 1,
              budget_s: float | None = None, timed: Calibration | None = None) -> Calibration:
    """Time ``steps`` training steps in each phase (input size, late freeze) of the run (after
    ``warmup`` untimed ones per phase: a size's first step creates its oneDNN primitives, 185
    against 117 ms a step after it on a 2-core AVX2 CPU, and the next is steady; the phases in
    turn, see :func:`_time_sizes`) and two forward passes of ``eval_batch``, on a copy of
    ``model`` with the run's optimiser, precision and memory layout.  ``model`` is left
    untouched.

    With ``budget_s``, timing stops once it has used ``CALIBRATION_SHARE`` of the budget (the
    warm-up half of that), keeping at least one warm-up and two timed steps per phase.
    ``timed``: an earlier calibration of the same run under another late freeze
    (:meth:`RunPlan.with_late_freeze`); only the phases it did not time are timed (in what
    is left of the budget's share), and the result holds both (its evaluation rate is
    ``timed``'s).
    """
    if isinstance(plan, RunConfig):  # a benchmark's config: planned here, on this loader
        plan = make_plan(plan, train_loader, task=Classification(2), has_val=True)
    began = time.perf_counter()
    used = timed.calibrate_s if timed is not None else 0.0  # the share is for both timings
    cap = None if budget_s is None else max(2.0, CALIBRATION_SHARE * budget_s - used)
    deadline = None if cap is None else began + cap
    flags = global_flags()
    scratch = copy.deepcopy(model)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            s = open_session(scratch, train_loader, None, plan, Path(tmp), num_classes=1,
                             progress=False)
            step_s, startup_s, measured, by_phase = _time_schedule(
                s, steps, warmup, deadline, phase_samples(timed) if timed is not None else None)
            image_s = (timed.eval_image_s if timed is not None
                       else _time_eval(s, eval_batch) if eval_batch is not None else 0.0)
    finally:
        restore_flags(flags)
    seconds = time.perf_counter() - began
    if timed is not None:  # what was timed before counts too
        measured, seconds = measured + timed.measured_steps, seconds + timed.calibrate_s
        startup_s += timed.startup_s
    return Calibration(step_s, image_s, measured, seconds, startup_s,
                       size_step_s=tuple((size, t) for (size, frozen), t in by_phase if not frozen),
                       frozen_step_s=tuple((size, t) for (size, frozen), t in by_phase if frozen))


def _time_schedule(s, steps: int, warmup: int, deadline: float | None = None,
                   known: dict | None = None) -> tuple[float, float, int, tuple]:
    """Seconds per step averaged over the run's phases of input size and late freeze (each
    weighted by its share of the steps), the warm-ups' extra seconds, the number of timed
    steps, and ``((size, frozen), seconds per step)`` for each phase (``(None, False)``: the
    data's own size, nothing frozen).  ``known``: seconds per step of phases timed before,
    which are not timed again."""
    sizes, late = list(s.cfg.data.progressive_sizes), s.cfg.train.late_freeze
    known = known or {}
    phases = [phase for phase in _shares(sizes, late) if phase not in known]
    by_phase, extra, timed = _time_sizes(s, phases, steps, warmup, deadline)
    by_phase = known | by_phase
    return _mean(by_phase, sizes, late), extra, timed, tuple(by_phase.items())


def _shares(sizes: list[int], late_freeze: float | None) -> dict:
    """``{(size, frozen): share of the steps}`` of a run's phases, without slivers (0.67 of a
    run in thirds leaves 0.3% unfrozen at the last size: not worth its warm-up and timed
    steps; the plans cost it as its size's other phase)."""
    shares: dict = {}
    for first, end, phase in run_phases(sizes, late_freeze, _SHARE_STEPS):
        shares[phase] = shares.get(phase, 0.0) + (end - first) / _SHARE_STEPS
    return {phase: share for phase, share in shares.items() if share >= _SLIVER}


def _mean(by_phase: dict, sizes: list[int], late_freeze: float | None) -> float:
    shares = _shares(sizes, late_freeze)
    return sum(by_phase[phase] * share for phase, share in shares.items()) / sum(shares.values())


_SHARE_STEPS = 10**6  # a run this long gives each phase its share of the steps to 1e-6
_SLIVER = 0.01


def _late(deadline: float | None) -> bool:
    """Past ``deadline``, by rank 0's clock: under torchrun the timing trains in DDP, and a
    rank that stopped a round before the others would leave them waiting in a collective."""
    return bool(distributed.broadcast_object(deadline is not None and time.perf_counter() > deadline))


def _time_sizes(s, phases: list[tuple[int | None, bool]], steps: int, warmup: int,
                deadline: float | None = None) -> tuple[dict, float, int]:
    """Seconds per step in each phase of ``phases`` (input size, None: the data's own; and
    the stem and first stage frozen or not), over up to ``steps`` rounds that train one step
    in each phase in turn, after up to ``warmup`` untimed steps per phase (a size's first
    steps create its oneDNN primitives); what the warm-ups took beyond as many timed steps;
    and how many steps were timed.  Past half of ``deadline``'s time a phase's warm-up ends
    after one step; past ``deadline``, the timing (after at least two rounds).  A step's
    clock starts after its phase is set (under torchrun, freezing rebuilds the DDP wrapper).

    In turn, not one size after the other: timed in blocks, one 2-core AVX2 CPU read 20 px at
    87-102 ms and 28 px at 178-204 ms in three calibrations (steady: 97 and 197 ms), the two
    moving apart, so a slow or fast second lands on one size; in turn it lands on all alike,
    and the re-plan's ratio of each size to the first holds (benchmarks/README.md, issue 25)."""
    batches = _batches(s.train_loader, len(phases) * (warmup + steps))
    first = time.perf_counter()
    half = None if deadline is None else first + (deadline - first) / 2
    warmed = dict.fromkeys(phases, 0)
    for phase in phases:
        s.freeze_late(phase[1])
        for x, y in itertools.islice(batches, warmup):
            train_batch(s, x, y, phase[0])
            s.state.step += 1
            warmed[phase] += 1
            if _late(half):
                break
    s.recorder.drain()  # one host sync: the warm-up steps have finished
    start = time.perf_counter()
    times: dict = {phase: [] for phase in phases}
    for rounds in range(1, steps + 1):  # each step timed with its batch's loading
        for phase in phases:
            s.freeze_late(phase[1])
            last = time.perf_counter()
            x, y = next(batches)
            train_batch(s, x, y, phase[0])
            s.state.step += 1
            s.recorder.drain()
            times[phase].append(time.perf_counter() - last)
        if rounds >= 2 and _late(deadline):
            break
    # the median: one step slowed by the host (seen: 165 ms against a true 137 ms on a quiet
    # machine) must not cut a 5-minute plan by 15%; the plan's margin covers the usual tail
    by_phase = {phase: statistics.median(times[phase]) for phase in phases}
    extra = start - first - sum(warmed[phase] * by_phase[phase] for phase in phases)
    return by_phase, max(extra, 0.0), sum(len(t) for t in times.values())


def _batches(loader: Iterable, n: int) -> Iterator:
    """The first ``n`` training batches, over as many epochs as that takes."""
    epoch = 0
    while n > 0:
        left = n
        for batch in itertools.islice(epoch_batches(loader, epoch), n):
            n -= 1
            yield batch
        if n == left:
            raise ConfigError("--time-budget: the training loader gave no batches to time")
        epoch += 1


@torch.no_grad()
def _time_eval(s, batch: torch.Tensor) -> float:
    """Seconds per image of an evaluation forward pass: the mean of two passes after a first
    (the best pass underestimated a whole evaluation by 2x on a loaded machine), of the
    network the run evaluates: BatchNorm folded into the convolutions (1.1-1.4x faster on
    2-core CPUs; timed unfolded, a 5-minute AVX2 plan kept about 5 s back for nothing)."""
    x = to_device(batch, s.rt)
    net = folded_for_eval(s.eval_net.eval(), x[:1])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with autocast(s.rt.device, s.rt.dtype):
            net(x).float().softmax(dim=1).sum().item()  # .item(): wait for the device
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / (len(times) - 1) / len(x)


def plan_steps(budget_s: float, spent_s: float, cal: Calibration, *, per_epoch: int,
               val_images: int, final_images: int, fixed_s: float = 4.0,
               epoch_s: float = EPOCH_S, margin: float = 0.07) -> int:
    """Optimiser steps that fit in ``budget_s`` wall seconds after ``spent_s`` already spent.

    The rest of the run costs, besides training steps: one validation pass of ``val_images``
    and ``epoch_s`` of checkpointing per epoch (each epoch changes the count, so the two are
    solved together), ``final_images`` evaluated at the end (test set x TTA views),
    ``fixed_s`` for the final checkpoint load, plots and process exit, and ``margin`` of the
    budget kept back because the timed steps are a sample: on a quiet 2-core machine three
    main jobs timed 133-143 ms per step against 137-140 ms over the whole run, and with a 5%
    margin the fastest-timed one ended at 295 s of 300 (7% keeps 21 s of 5 minutes back).  A
    load rising from 3 to 5 on 2 cores once took 20 s more (benchmarks/README.md row 10): a
    budget is a promise on a quiet machine only.
    """
    left = budget_s * (1.0 - margin) - spent_s - fixed_s - final_images * cal.eval_image_s
    per_epoch_s = val_images * cal.eval_image_s + epoch_s
    best, epochs = 0, 1
    # Each epoch count gives the steps that fit beside its evaluations; keep the longest run.
    while (epochs - 1) * per_epoch * cal.step_s < left:
        fits = int((left - epochs * per_epoch_s) / cal.step_s)
        best = max(best, min(fits, epochs * per_epoch))
        epochs += 1
    return best
