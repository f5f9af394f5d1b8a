"""Schedules as pure functions of the optimiser step: the learning rate, and the input size of
progressive resizing (:func:`input_size_schedule`, applied by :func:`resize_batch`).

A schedule is ``lr(step) -> float`` (or ``size(step)``) with no hidden state, so resuming at step ``s`` needs only
``s`` (nothing to save), and the learning rate of any step can be named in an error message.
``step`` counts optimiser steps from 0; ``lr(step)`` is the rate used *for* that step.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from resnetlab.engine.config import ScheduleConfig
from resnetlab.utils.errors import ConfigError

__all__ = ["lr_schedule", "warmup_steps", "SCHEDULES", "input_size_schedule", "resize_batch",
           "late_freeze_schedule", "run_phases", "stretch", "moved_end"]

SCHEDULES = ("onecycle", "cosine", "step", "constant")


def lr_schedule(
    cfg: ScheduleConfig, base_lr: float, total_steps: int, steps_per_epoch: int
) -> Callable[[int], float]:
    """The schedule ``cfg`` for a run of ``total_steps`` optimiser steps.

    Warm-up (``warmup_epochs`` or ``warmup_frac``) rises linearly from ``warmup_start_frac`` x
    ``base_lr`` and reaches ``base_lr`` on its last step (Goyal et al. 2017, sec. 2.2: linear
    warm-up keeps large-batch SGD stable early).  The decay phase then runs over the remaining
    steps; steps past ``total_steps`` keep the final value.
    """
    # total_steps, steps_per_epoch >= 1: the run's plan (engine.plan.make_plan) says so
    warmup = warmup_steps(cfg, total_steps, steps_per_epoch)
    decay = _decay_fn(cfg, total_steps, steps_per_epoch, warmup)
    return functools.partial(
        _lr_at, base_lr=float(base_lr), warmup=warmup, start=cfg.warmup_start_frac, decay=decay
    )


def warmup_steps(cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> int:
    """The warm-up's length in optimiser steps, for a run of ``total_steps``."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch + cfg.warmup_frac * total_steps)
    return min(warmup, total_steps)


def _decay_fn(cfg: ScheduleConfig, total: int, per_epoch: int, warmup: int) -> Callable[[int], float]:
    span = max(total - warmup, 1)
    final = cfg.final_lr_frac
    if cfg.name == "onecycle":
        return functools.partial(_linear, warmup=warmup, span=span, final=final)
    if cfg.name == "cosine":
        return functools.partial(_cosine, warmup=warmup, span=span, final=final)
    if cfg.name == "step":
        bounds = [round(m * per_epoch) for m in cfg.milestones]
        return functools.partial(_steps, bounds=bounds, gamma=cfg.gamma)
    return _constant


def _lr_at(step: int, *, base_lr: float, warmup: int, start: float, decay: Callable) -> float:
    if step < warmup:
        return base_lr * (start + (1.0 - start) * (step + 1) / warmup)
    return base_lr * decay(step)


def _progress(step: int, warmup: int, span: int) -> float:
    return min(max(step - warmup, 0) / span, 1.0)


def _linear(step: int, *, warmup: int, span: int, final: float) -> float:
    return 1.0 + (final - 1.0) * _progress(step, warmup, span)


def _cosine(step: int, *, warmup: int, span: int, final: float) -> float:
    # Loshchilov & Hutter 2017 (SGDR), one half-period without restarts.
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * _progress(step, warmup, span)))


def _steps(step: int, *, bounds: list[int], gamma: float) -> float:
    return gamma ** bisect.bisect_right(bounds, step)


def _constant(step: int) -> float:
    return 1.0


def input_size_schedule(sizes: list[int], total_steps: int) -> Callable[[int], int | None]:
    """Progressive resizing as a pure function of the step, like the learning rate: the run's
    ``total_steps`` are split into ``len(sizes)`` equal phases and ``size(step)`` is the longer
    image side for that step's batch (None: no resizing).  Small images early cost a fraction
    of the work (20 px is 0.51x the FLOPs of 28 px) while the net still learns coarse shapes;
    the last phase at full size lets BN statistics and filters settle at the size evaluated
    (Touvron et al. 2019, "FixRes": a train/test size gap costs accuracy)."""
    if not sizes:
        return _no_resize
    return functools.partial(_size_at, sizes=tuple(int(s) for s in sizes),
                             total=max(int(total_steps), 1))


def _no_resize(step: int) -> None:
    return None


def _size_at(step: float, *, sizes: tuple[int, ...], total: int) -> int:
    return sizes[min(int(step * len(sizes) // total), len(sizes) - 1)]


def late_freeze_schedule(late_freeze: float | None, total_steps: int) -> Callable[[int], bool]:
    """``train.late_freeze`` as a pure function of the step: True from step
    ``int(late_freeze * total_steps)`` on (the stem and first stage frozen), never without it."""
    start = math.inf if late_freeze is None else _freeze_step(late_freeze, total_steps)
    return functools.partial(_at_or_after, start=start)


def _freeze_step(late_freeze: float, total_steps: int) -> int:
    """The first frozen step of a run of ``total_steps`` (also where its phase begins)."""
    return int(late_freeze * max(int(total_steps), 1))


def _at_or_after(step: int, *, start: float) -> bool:
    return step >= start


def run_phases(sizes: list[int], late_freeze: float | None,
               total_steps: int) -> list[tuple[int, int, tuple[int | None, bool]]]:
    """``(first step, end step, (input size, frozen))`` of each stretch of a run of
    ``total_steps`` that trains one input size with the same layers frozen, in order: what a
    step costs is the same throughout a stretch (the time budget's unit of planning)."""
    total = max(int(total_steps), 1)
    size_at, frozen_at = input_size_schedule(sizes, total), late_freeze_schedule(late_freeze, total)
    bounds = {0, total} | {-(-p * total // len(sizes)) for p in range(1, len(sizes))}
    if late_freeze is not None:
        bounds.add(min(_freeze_step(late_freeze, total), total))
    edges = sorted(bounds)
    return [(a, b, (size_at(a), frozen_at(a))) for a, b in itertools.pairwise(edges) if b > a]


def stretch(fn: Callable[[float], Any], total_steps: int, moved: tuple[int, int] | None) -> Callable[[int], Any]:
    """``fn``, a schedule of a run of ``total_steps``, for a run whose end was moved to
    ``end`` at step ``at`` (``moved = (at, end)``: ``train.budget_end``): from ``at`` on, the
    rest of the schedule is stretched (or squeezed) to end at ``end``, so the learning rate
    still decays to its final value on the last step and the last phase of input size and
    freeze ends there.  ``fn`` itself without a moved end."""
    if moved is None:
        return fn
    at, end = moved
    return functools.partial(_stretched, fn=fn, at=at, ratio=(int(total_steps) - at) / (end - at))


def _stretched(step: int, *, fn: Callable[[float], Any], at: int, ratio: float) -> Any:
    return fn(step if step < at else at + (step - at) * ratio)


def moved_end(phases: list[tuple[int, int, Any]], total_steps: int,
              moved: tuple[int, int] | None) -> list[tuple[int, int, Any]]:
    """``run_phases`` of a run of ``total_steps`` whose end was moved (see :func:`stretch`):
    each boundary from ``at`` on is the first step whose stretched step reaches it."""
    if moved is None:
        return phases
    at, end = moved
    scale = (end - at) / (int(total_steps) - at)

    def bound(step: int) -> int:
        return step if step <= at else min(at + math.ceil((step - at) * scale - 1e-9), end)

    return [(bound(a), bound(b), key) for a, b, key in phases if bound(b) > bound(a)]


def resize_batch(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """``x`` (N, C, H, W) with its longer side resized to ``size`` (aspect kept; antialiased
    bilinear, so shrinking averages pixels instead of dropping them); unchanged when ``size``
    is None or already the longer side.  Vectors (tables) are a one-line error."""
    if size is None:
        return x
    if x.dim() != 4:
        raise ConfigError(f"--progressive-sizes resizes images, but the batches have shape "
                          f"{tuple(x.shape)}; drop --progressive-sizes for this data")
    h, w = x.shape[-2:]
    if max(h, w) == size:
        return x
    scale = size / max(h, w)
    out = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))),
                        mode="bilinear", antialias=True, align_corners=False)
    if x.is_contiguous(memory_format=torch.channels_last):  # keep the layout the net runs in
        return out.contiguous(memory_format=torch.channels_last)
    return out
