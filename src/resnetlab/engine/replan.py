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

from resnetlab.engine.plan import BudgetCheck, RunPlan
from resnetlab.engine.schedules import warmup_steps

if TYPE_CHECKING:  # budget imports the loop, which imports this module
    from resnetlab.engine.budget import Calibration

__all__ = ["plan_check", "recheck", "RECHECK_MARGIN", "RECHECK_TAIL_S"]


# What the re-plan keeps back.  The later sizes (two thirds of the steps, most of the time)
# are still estimated from the sample: with 3% kept back, an AVX2 run whose later sizes were
# sampled fast ended at 310 s of 300 (benchmarks/README.md).  So it keeps the first plan's 7%,
# and RECHECK_TAIL_S for what follows the final evaluation (the best weights loaded, plots,
# results, the process's exit: 3-8 s on 2-core CPUs).
RECHECK_MARGIN = 0.07
RECHECK_TAIL_S = 8.0
# Each epoch's checkpoint and log writes, in seconds (what plan_steps counts too).
EPOCH_S = 0.5


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
    sampled = dict(check.size_step_s)
    if sizes[0] in sampled:  # how fast this machine trains now, against the sample
        speed = step_s / sampled[sizes[0]]
        per_step = [sampled[size] * speed for size in sizes]
    else:  # a calibration without per-size samples: every size at the run's own rate
        speed, per_step = 1.0, [step_s] * len(sizes)
    eval_image_s = check.eval_image_s * speed
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
