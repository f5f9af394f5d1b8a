"""A time-budgeted run's second look at its own length (:class:`~resnetlab.engine.plan.BudgetCheck`).

:func:`resnetlab.engine.budget.calibrate` times a short sample before the run; on a quiet 2-core
CPU the same run's steps read 133 to 178 ms there against 137-141 ms over the whole run, so a
5-minute plan could be 25% short (``benchmarks/README.md``, issue 25).  The run therefore times
its own first steps as it trains them (:func:`resnetlab.engine.loop.train_epoch`) and
:func:`recheck` fixes the step count again from that rate.  :func:`plan_check` decides where,
early enough that nothing trained so far depends on the length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resnetlab.engine.plan import BudgetCheck, Deadline, RunPlan
from resnetlab.engine.schedules import warmup_steps

if TYPE_CHECKING:  # budget imports the loop, which imports this module
    from resnetlab.engine.budget import Calibration

__all__ = ["plan_check", "recheck", "deadline_stop", "deadline_window", "RECHECK_MARGIN",
           "RECHECK_TAIL_S", "DEADLINE_MARGIN", "DEADLINE_EVERY", "DEADLINE_SETTLE"]


# What the re-plan keeps back.  The later sizes (two thirds of the steps, most of the time)
# are still estimated from the sample: with 3% kept back, an AVX2 run whose later sizes were
# sampled fast ended at 310 s of 300 (benchmarks/README.md).  So it keeps the first plan's 7%,
# and RECHECK_TAIL_S for what follows the final evaluation (the best weights loaded, plots,
# results, the process's exit: 3-8 s on 2-core CPUs).
RECHECK_MARGIN = 0.07
RECHECK_TAIL_S = 8.0
# Each epoch's checkpoint and log writes, in seconds (what plan_steps counts too).
EPOCH_S = 0.5
# The deadline (deadline_stop): what it keeps back of the budget (the plan aims 7% short of
# it, so a run on pace is never stopped), how many steps apart it looks, and how many steps
# of a new epoch or input size it lets pass first (their first steps create oneDNN
# primitives; an epoch's first steps follow its validation).  One 2-core Xeon ran a 5-minute
# AVX2 run 2-3x slower than it had been planned and re-planned, ending at 392 s
# (benchmarks/README.md, issue 25).
DEADLINE_MARGIN = 0.02
DEADLINE_EVERY = 50
DEADLINE_SETTLE = 5
DEADLINE_MIN_WINDOW = 10  # fewer steps say too little; shorter epochs or phases go unwatched


def plan_check(plan: RunPlan, cal: Calibration, *, budget_s: float, started: float,
               val_images: int, final_images: int, cap: int) -> BudgetCheck | None:
    """When the run planned to ``plan.schedule_steps`` will time its own steps and plan again
    (see :class:`~resnetlab.engine.plan.BudgetCheck`); None when it cannot do so early
    enough: no warm-up to hide the change in, or too few steps before the first resize, the
    warm-up's end or the first epoch's end."""
    steps, cfg = plan.schedule_steps, plan.config
    phases = max(len(cfg.data.progressive_sizes), 1)
    warmup = warmup_steps(cfg.schedule, steps, plan.steps_per_epoch)
    # the first step whose learning rate or input size depends on the length, and the first
    # that is saved (an epoch's end) must come after the check
    limit = min(warmup, -(-steps // phases), plan.steps_per_epoch) - 1
    at_step = limit * 3 // 4
    from_step = at_step // 4  # past the first steps' one-off costs
    if at_step - from_step < _RECHECK_MIN_STEPS:
        return None
    return BudgetCheck(budget_s=budget_s, started=started, from_step=from_step, at_step=at_step,
                       size_step_s=cal.size_step_s, eval_image_s=cal.eval_image_s,
                       val_images=val_images, final_images=final_images, cap=cap)


_RECHECK_MIN_STEPS = 20  # fewer timed steps say no more than the sample before the run


def recheck(plan: RunPlan, step_s: float, now: float) -> int:
    """The steps that fit the budget of ``plan.budget_check``, at ``now``
    (``time.perf_counter()``), its ``at_step`` steps trained at ``step_s`` seconds each.

    The run's own rate at the first input size, against the sample's, says how fast this
    machine trains now (the loop's own per-step work included); every size's sample and the
    evaluation's are scaled by it.  That holds because the sample times the sizes in turn
    (:func:`resnetlab.engine.budget.calibrate`), so their ratios hold; timed one size after
    the other, the ratio was off by up to 15% and one size's error reached every other
    (AVX2 plans from 1567 to 1846 steps, ``benchmarks/README.md``).  At least enough steps to
    keep the steps trained so far in the first resize phase."""
    check = plan.budget_check
    assert check is not None, "recheck needs a plan with a budget_check"
    sizes = list(plan.config.data.progressive_sizes) or [None]
    per_step, eval_image_s = _scaled_costs(plan, check, sizes[0], step_s)
    left = (check.budget_s * (1.0 - RECHECK_MARGIN) - (now - check.started) - RECHECK_TAIL_S
            - check.final_images * eval_image_s)
    per_epoch_s = check.val_images * eval_image_s + EPOCH_S  # a validation pass and a checkpoint
    lowest = check.at_step * len(sizes) + 1
    for total in range(check.cap, lowest, -1):
        epochs = -(-total // plan.steps_per_epoch)
        if _steps_cost(check.at_step, total, per_step) + epochs * per_epoch_s <= left:
            return total
    return lowest


def _steps_cost(done: int, total: int, per_step: list[float]) -> float:
    """Seconds for steps ``done`` .. ``total - 1`` of a run of ``total`` steps whose equal
    phases cost ``per_step`` seconds a step each (``input_size_schedule``'s phases)."""
    phases = len(per_step)
    cost = 0.0
    for p, seconds in enumerate(per_step):
        first, end = -(-p * total // phases), -(-(p + 1) * total // phases)
        cost += max(0, end - max(first, done)) * seconds
    return cost


def deadline_window(plan: RunPlan) -> int:
    """Steps per look at the deadline: ``DEADLINE_EVERY``, or fewer so that an epoch or a
    resize phase of the plan holds two windows after its first ``DEADLINE_SETTLE`` steps
    (small data: 39 steps an epoch would otherwise never be looked at), at least
    ``DEADLINE_MIN_WINDOW``."""
    phases = max(len(plan.config.data.progressive_sizes), 1)
    span = min(plan.steps_per_epoch, plan.schedule_steps // phases) - DEADLINE_SETTLE
    return min(DEADLINE_EVERY, max(DEADLINE_MIN_WINDOW, span // 2))


def deadline_stop(plan: RunPlan, size: int | None, step_s: float, now: float, step: int) -> int:
    """The step at which a run that has trained ``step`` steps, the latest at input ``size``
    in ``step_s`` seconds each, must stop to end inside its budget (``plan.deadline``) at
    ``now``: its planned end (the schedule's, or its own ``train.max_steps``) when that fits.

    The rate scales every size's sample and the evaluation's, as :func:`recheck` does; the
    rest of the run is the steps to the stop (in the planned schedule's phases), a
    validation pass and a checkpoint per epoch ended, one more for a stop inside an epoch,
    the final evaluation and ``RECHECK_TAIL_S``, all inside ``DEADLINE_MARGIN`` of the end."""
    deadline = plan.deadline
    assert deadline is not None, "deadline_stop needs a plan with a deadline"
    per_step, eval_image_s = _scaled_costs(plan, deadline, size, step_s)
    left = (deadline.budget_s * (1.0 - DEADLINE_MARGIN) - (now - deadline.started)
            - RECHECK_TAIL_S - deadline.final_images * eval_image_s)
    schedule, per_epoch = plan.schedule_steps, plan.steps_per_epoch
    per_validation = deadline.val_images * eval_image_s + EPOCH_S
    validated = (step - 1) // per_epoch  # epochs whose validation is done

    def cost(stop: int) -> float:
        steps = _steps_cost(step, schedule, per_step) - _steps_cost(stop, schedule, per_step)
        return steps + (-(-stop // per_epoch) - validated) * per_validation

    low, high = step, min(schedule, deadline.max_steps or schedule)  # the stop lies in between
    if cost(high) <= left:
        return high
    while low < high:  # the last stop whose cost fits (cost grows with the stop)
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid) <= left else (low, mid - 1)
    return low


def _scaled_costs(plan: RunPlan, deadline: Deadline, size: int | None,
                  step_s: float) -> tuple[list[float], float]:
    """Seconds per step of each resize phase, and per evaluated image, at the rate the run
    trains ``size`` now: the sample scaled by that rate against its own for ``size``."""
    sizes = list(plan.config.data.progressive_sizes) or [None]
    sampled = dict(deadline.size_step_s)
    if size not in sampled:  # no sample of this size: every size at the run's rate
        return [step_s] * len(sizes), deadline.eval_image_s
    speed = step_s / sampled[size]
    return [sampled.get(s, sampled[size]) * speed for s in sizes], deadline.eval_image_s * speed
