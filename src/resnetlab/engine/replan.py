"""A time-budgeted run's second look at its own length (:class:`~resnetlab.engine.plan.BudgetCheck`).

:func:`resnetlab.engine.budget.calibrate` times a short sample before the run; on a quiet 2-core
CPU the same run's steps read 133 to 178 ms there against 137-141 ms over the whole run, so a
5-minute plan could be 25% short (``benchmarks/README.md``, issue 25).  The run therefore times
its own first steps as it trains them (:func:`resnetlab.engine.loop.train_epoch`) and
:func:`recheck` fixes the step count again from that rate.  :func:`plan_check` decides where,
early enough that nothing trained so far depends on the length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from resnetlab.engine.plan import BudgetCheck, Deadline, RunPlan, phase_samples
from resnetlab.engine.schedules import moved_end, run_phases, warmup_steps

if TYPE_CHECKING:  # budget imports the loop, which imports this module
    from resnetlab.engine.budget import Calibration

__all__ = ["plan_check", "recheck", "deadline_stop", "deadline_window", "planned_end", "reaim",
           "RECHECK_MARGIN", "RECHECK_TAIL_S", "DEADLINE_MARGIN", "DEADLINE_EVERY", "DEADLINE_SETTLE",
           "REAIM_STEPS", "REAIM_MARGIN"]


# What the re-plan keeps back.  The later phases (two thirds of the steps, most of the time)
# are still estimated from the sample: with 3% kept back and nothing watching, an AVX2 run
# whose later sizes were sampled fast ended at 310 s of 300 (benchmarks/README.md).  The
# deadline now watches them (deadline_stop) and judges the rate of a whole epoch and phase,
# so 4% is kept back (7% before the deadline: 5-minute AVX2 runs ended at 254-281 s; 5% with
# it: 277-288 s; 3%: 282-290 s, but 1.5 points above the deadline's margin left too little
# room for a 1-2% swing in the rate, and the deadline stopped and resumed runs three or four
# times each), and RECHECK_TAIL_S for what follows the final evaluation (the best weights
# loaded, plots, results, the process's exit: 1-3 s on 2-core CPUs in 2026-12-07's runs, up
# to 8 s once on a loaded one).
RECHECK_MARGIN = 0.04
RECHECK_TAIL_S = 5.0
# Each epoch's checkpoint and log writes, in seconds (what plan_steps counts too).
EPOCH_S = 0.5
# The deadline (deadline_stop): what it keeps back of the budget (the re-plan aims 4% short,
# so a run on pace is not stopped), how many steps apart it looks, and how many steps
# of a new epoch or input size it lets pass first (their first steps create oneDNN
# primitives; an epoch's first steps follow its validation).  One 2-core Xeon ran a 5-minute
# AVX2 run 2-3x slower than it had been planned and re-planned, ending at 392 s
# (benchmarks/README.md, issue 25).
DEADLINE_MARGIN = 0.015
DEADLINE_EVERY = 50
DEADLINE_SETTLE = 5
DEADLINE_MIN_WINDOW = 10  # fewer steps say too little; shorter epochs or phases go unwatched
# The run's last phase re-aims its end once (reaim) from at least this many of its own steps
# (two deadline windows: one window's rate swung 104-119 ms on a quiet 2-core CPU), aiming
# this far short of the budget: 1 point above the deadline's margin, so that a rate 5% worse
# over the last minute still ends inside without a stop.
REAIM_STEPS = 100
REAIM_MARGIN = 0.025


def plan_check(plan: RunPlan, cal: Calibration, *, budget_s: float, started: float,
               val_images: int, final_images: int, cap: int) -> BudgetCheck | None:
    """When the run planned to ``plan.schedule_steps`` will time its own steps and plan again
    (see :class:`~resnetlab.engine.plan.BudgetCheck`); None when it cannot do so early
    enough: no warm-up to hide the change in, or too few steps before the first resize or
    late freeze, the warm-up's end or the first epoch's end."""
    steps, cfg = plan.schedule_steps, plan.config
    warmup = warmup_steps(cfg.schedule, steps, plan.steps_per_epoch)
    # the first step whose learning rate, input size or frozen layers depend on the length,
    # and the first that is saved (an epoch's end) must come after the check
    limit = min(warmup, _phases(plan, steps)[0][1], plan.steps_per_epoch) - 1
    at_step = limit * 3 // 4
    from_step = at_step // 4  # past the first steps' one-off costs
    if at_step - from_step < _RECHECK_MIN_STEPS:
        return None
    return BudgetCheck(budget_s=budget_s, started=started, from_step=from_step, at_step=at_step,
                       size_step_s=cal.size_step_s, frozen_step_s=cal.frozen_step_s,
                       eval_image_s=cal.eval_image_s, val_images=val_images,
                       final_images=final_images, cap=cap)


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
    keep the steps trained so far in the first phase (one input size, nothing frozen)."""
    check = plan.budget_check
    assert check is not None, "recheck needs a plan with a budget_check"
    seconds, eval_image_s = _scaled_costs(plan, check, _phases(plan)[0][2], step_s)
    left = (check.budget_s * (1.0 - RECHECK_MARGIN) - (now - check.started) - RECHECK_TAIL_S
            - check.final_images * eval_image_s)
    per_epoch_s = check.val_images * eval_image_s + EPOCH_S  # a validation pass and a checkpoint
    for total in range(check.cap, check.at_step, -1):
        phases = _phases(plan, total)
        if phases[0][1] <= check.at_step:  # shorter: the steps trained would change phase
            return total + 1
        epochs = -(-total // plan.steps_per_epoch)
        if _steps_cost(check.at_step, total, phases, seconds) + epochs * per_epoch_s <= left:
            return total
    return check.at_step + 1


def _phases(plan: RunPlan, total: int | None = None) -> list:
    """``run_phases`` of ``plan``'s sizes and late freeze for a run of ``total`` steps (by
    default the plan's own length, its end where a time budget moved it)."""
    cfg = plan.config
    sizes, late = list(cfg.data.progressive_sizes), cfg.train.late_freeze
    if total is not None:
        return run_phases(sizes, late, total)
    return moved_end(run_phases(sizes, late, plan.schedule_steps), plan.schedule_steps,
                     cfg.train.budget_end)


def _steps_cost(done: int, end: int, phases: list, seconds: dict) -> float:
    """Seconds for steps ``done`` .. ``end - 1`` of a run whose ``phases``
    (:func:`~resnetlab.engine.schedules.run_phases`) cost ``seconds[(size, frozen)]`` a step."""
    return sum(max(0, min(last, end) - max(first, done)) * seconds[key]
               for first, last, key in phases)


def deadline_window(plan: RunPlan) -> int:
    """Steps per look at the deadline: ``DEADLINE_EVERY``, or fewer so that an epoch or a
    resize phase of the plan holds two windows after its first ``DEADLINE_SETTLE`` steps
    (small data: 39 steps an epoch would otherwise never be looked at), at least
    ``DEADLINE_MIN_WINDOW``."""
    shortest = min(end - first for first, end, _ in _phases(plan))
    span = min(plan.steps_per_epoch, shortest) - DEADLINE_SETTLE
    return min(DEADLINE_EVERY, max(DEADLINE_MIN_WINDOW, span // 2))


def deadline_stop(plan: RunPlan, phase: tuple[int | None, bool], step_s: float, now: float,
                  step: int) -> int:
    """The step at which a run that has trained ``step`` steps, the latest in ``phase``
    (input size, frozen) in ``step_s`` seconds each, must stop to end inside its budget
    (``plan.deadline``) at ``now``: its planned end (the schedule's, or its own
    ``train.max_steps``) when that fits.

    The rate scales every size's sample and the evaluation's, as :func:`recheck` does; the
    rest of the run is the steps to the stop (in the planned schedule's phases), a
    validation pass and a checkpoint per epoch ended, one more for a stop inside an epoch,
    the final evaluation and ``RECHECK_TAIL_S``, all inside ``DEADLINE_MARGIN`` of the end."""
    deadline = plan.deadline
    assert deadline is not None, "deadline_stop needs a plan with a deadline"
    end = planned_end(plan)
    sampled = phase_samples(deadline)
    if sampled and phase not in sampled:  # a sliver the sample skipped (e.g. 28 px unfrozen
        # before a freeze from 0.67): its rate says nothing of the phases that were timed
        return end
    seconds, left, validations = _room(plan, phase, step_s, now, step, DEADLINE_MARGIN)
    phases = _phases(plan)

    def cost(stop: int) -> float:
        return _steps_cost(step, stop, phases, seconds) + validations(stop)

    low, high = step, end  # the stop lies in between
    if cost(high) <= left:
        return high
    while low < high:  # the last stop whose cost fits (cost grows with the stop)
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid) <= left else (low, mid - 1)
    return low


def planned_end(plan: RunPlan) -> int:
    """Where a time-budgeted run ends unless its deadline stops it: the schedule's end (or
    where :func:`reaim` moved it), or its own ``train.max_steps``."""
    end, cap = plan.end_step, plan.deadline.max_steps
    return min(end, cap or end)


def reaim(plan: RunPlan, phase: tuple[int | None, bool], step_s: float, now: float, step: int,
          timed: int) -> int | None:
    """The step where a time-budgeted run should end, judged once in its last phase (one
    input size and freeze to the end) from ``timed`` of its own steps there at ``step_s``
    seconds each, ``step`` steps trained at ``now``; None when it is not time for that, or
    the planned end is the one.

    The plan and the re-plan priced the last phase from a sample of ten steps taken before
    the run, which read a phase up to 10% off (a 5-minute AVX2 run on a Zen 4 sampled 24 px
    at 148 ms, trained it at 141, and ended 28 s early; another, re-planned from a slow
    stretch, 44 s early: ``benchmarks/README.md``, issue 25).  Here the rest of the run is
    this phase's steps at the run's own rate, so the end is aimed ``REAIM_MARGIN`` short of
    the budget (between the re-plan's margin and the deadline's, which still watches), no
    later than the budget's epochs (``plan.deadline.cap``).  The rest of the schedule is
    stretched or squeezed to the new end (``train.budget_end``), so the learning rate still
    decays to its end."""
    deadline, train = plan.deadline, plan.config.train
    first, _, last_phase = _phases(plan)[-1]
    if (timed < REAIM_STEPS or step < first or phase != last_phase or deadline.max_steps
            or train.budget_end is not None or train.budget_stop is not None):
        return None
    _, left, validations = _room(plan, phase, step_s, now, step, REAIM_MARGIN)

    def cost(end: int) -> float:  # the rest of the run: this phase's steps at the run's rate
        return (end - step) * step_s + validations(end)

    end = step + 1
    for end in range(max(deadline.cap or 0, plan.end_step), step, -1):
        if cost(end) <= left:
            break
    return None if end == plan.end_step else end


def _room(plan: RunPlan, phase: tuple[int | None, bool], step_s: float, now: float, step: int,
          margin: float) -> tuple[dict, float, Callable[[int], float]]:
    """What the rest of a run with a deadline has to fit in, judged at ``now`` after ``step``
    steps, the latest in ``phase`` at ``step_s`` seconds each: each phase's seconds per step
    (:func:`_scaled_costs`), the seconds left for training and validating (the budget less
    ``margin`` of it, the time spent, the final evaluation and ``RECHECK_TAIL_S``), and the
    seconds of the validation passes and checkpoints from here to a given end."""
    deadline, per_epoch = plan.deadline, plan.steps_per_epoch
    seconds, eval_image_s = _scaled_costs(plan, deadline, phase, step_s)
    left = (deadline.budget_s * (1.0 - margin) - (now - deadline.started)
            - RECHECK_TAIL_S - deadline.final_images * eval_image_s)
    per_validation = deadline.val_images * eval_image_s + EPOCH_S
    validated = (step - 1) // per_epoch  # epochs whose validation is done

    def validations(end: int) -> float:
        return (-(-end // per_epoch) - validated) * per_validation

    return seconds, left, validations


def _scaled_costs(plan: RunPlan, deadline: Deadline | BudgetCheck, phase: tuple[int | None, bool],
                  step_s: float) -> tuple[dict, float]:
    """Seconds per step of each ``(input size, frozen)`` phase, and per evaluated image, at
    the rate the run trains ``phase`` now: the sample scaled by that rate against its own
    for ``phase``.  A phase that was not sampled costs its size's other phase (a frozen one
    its size's unfrozen step: the larger), else the sampled ``phase``'s."""
    sizes = list(plan.config.data.progressive_sizes) or [None]
    sampled = phase_samples(deadline)
    keys = [(size, frozen) for size in sizes for frozen in (False, True)]
    if phase not in sampled:  # no sample of this phase: every phase at the run's rate
        return dict.fromkeys(keys, step_s), deadline.eval_image_s
    speed = step_s / sampled[phase]

    def sample(size: int | None, frozen: bool) -> float:
        return sampled.get((size, frozen)) or sampled.get((size, not frozen)) or sampled[phase]

    return {key: sample(*key) * speed for key in keys}, deadline.eval_image_s * speed
