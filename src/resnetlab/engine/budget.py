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
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from resnetlab.engine.config import RunConfig
from resnetlab.engine.loop import train_batch
from resnetlab.engine.runtime import global_flags, restore_flags, to_device
from resnetlab.engine.session import epoch_batches, open_session
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


def calibrate(model: nn.Module, train_loader: Iterable, eval_batch: torch.Tensor | None,
              cfg: RunConfig, *, steps: int = 10, warmup: int = 4) -> Calibration:
    """Time ``steps`` training steps (after ``warmup`` untimed ones, which create the oneDNN
    primitives and caches) and two forward passes of ``eval_batch``, on a copy of ``model``
    with the run's optimiser, precision and memory layout.  ``model`` is left untouched."""
    began = time.perf_counter()
    flags = global_flags()
    scratch = copy.deepcopy(model)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            s = open_session(scratch, train_loader, None, cfg, Path(tmp), num_classes=1,
                             progress=False)
            step_s, startup_s = _time_schedule(s, cfg.data.progressive_sizes, steps, warmup)
            image_s = _time_eval(s, eval_batch) if eval_batch is not None else 0.0
    finally:
        restore_flags(flags)
    return Calibration(step_s, image_s, steps, time.perf_counter() - began, startup_s)


def _time_schedule(s, sizes: list[int], steps: int, warmup: int) -> tuple[float, float]:
    """Seconds per step averaged over a progressive-resizing schedule (each distinct size timed
    on its own, weighted by its share of the phases), and the warm-ups' extra seconds."""
    if not sizes:
        return _time_steps(s, steps, warmup, None)
    timed = {size: _time_steps(s, steps, warmup, size) for size in sorted(set(sizes))}
    step_s = sum(timed[size][0] for size in sizes) / len(sizes)
    return step_s, sum(extra for _, extra in timed.values())


def _time_steps(s, steps: int, warmup: int, size: int | None) -> tuple[float, float]:
    """Seconds per step over ``steps`` steps after ``warmup`` (small data sets wrap around),
    at input ``size`` (None: the data's own), and what the warm-up steps took beyond as many
    timed steps (the first steps at a size create its oneDNN primitives)."""
    first = start = time.perf_counter()
    for i, (x, y) in enumerate(_batches(s.train_loader, warmup + steps)):
        if i == warmup:
            s.recorder.drain()  # one host sync: the warm-up steps have finished
            start = time.perf_counter()
        train_batch(s, x, y, size)
        s.state.step += 1
    s.recorder.drain()
    step_s = (time.perf_counter() - start) / steps
    return step_s, max(start - first - warmup * step_s, 0.0)


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
    (the best pass underestimated a whole evaluation by 2x on a loaded machine)."""
    net = s.net.eval()
    x = to_device(batch, s.rt)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with autocast(s.rt.device, s.rt.dtype):
            net(x).float().softmax(dim=1).sum().item()  # .item(): wait for the device
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / (len(times) - 1) / len(x)


def plan_steps(budget_s: float, spent_s: float, cal: Calibration, *, per_epoch: int,
               val_images: int, final_images: int, fixed_s: float = 4.0,
               epoch_s: float = 0.5, margin: float = 0.08) -> int:
    """Optimiser steps that fit in ``budget_s`` wall seconds after ``spent_s`` already spent.

    The rest of the run costs, besides training steps: one validation pass of ``val_images``
    and ``epoch_s`` of checkpointing per epoch (each epoch changes the count, so the two are
    solved together), ``final_images`` evaluated at the end (test set x TTA views),
    ``fixed_s`` for the final checkpoint load, plots and process exit, and ``margin`` of the
    budget kept back because throughput on a shared machine drifts (a 5-minute budget ran
    5 min 20 s with 5% at a load average rising from 3 to 5 on 2 cores; benchmarks/README.md).
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
