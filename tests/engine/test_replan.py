"""A time-budgeted run plans its length again from its own first steps (issue 25).

The sample timed before a run misread a step by up to 25% on a quiet machine; the run's own
steps do not.  The re-plan comes before any step that depends on the length, so the saved
config (the final step count, the warm-up in steps) reruns the same run bit for bit.
"""

from __future__ import annotations

import dataclasses
import time

import safetensors.torch
import torch

from helpers import NUM_CLASSES, blobs, budget_loader, budget_plan, loop_config, small_net
from resnetlab.engine import fit
from resnetlab.engine.budget import Calibration
from resnetlab.engine.config import RunConfig
from resnetlab.engine.plan import BudgetCheck, Deadline
from resnetlab.engine.replan import (
    DEADLINE_EVERY,
    DEADLINE_MARGIN,
    DEADLINE_MIN_WINDOW,
    DEADLINE_SETTLE,
    RECHECK_MARGIN,
    RECHECK_TAIL_S,
    _steps_cost,
    deadline_stop,
    deadline_window,
    plan_check,
    recheck,
)
from resnetlab.engine.schedules import lr_schedule, run_phases
from resnetlab.run import config_with


def _check(**changes) -> BudgetCheck:
    base = dict(budget_s=100.0, started=0.0, from_step=10, at_step=40, size_step_s=((None, 0.1),),
                eval_image_s=0.001, val_images=100, final_images=200, cap=5000)
    return BudgetCheck(**{**base, **changes})


def test_steps_cost_counts_each_resize_phase():
    # 30 steps in thirds of 10; from step 5: 5 steps of the first phase, then 10 of each other
    thirds = run_phases([4, 5, 6], None, 30)
    seconds = {(4, False): 1.0, (5, False): 2.0, (6, False): 3.0}
    assert _steps_cost(5, 30, thirds, seconds) == 5 * 1.0 + 10 * 2.0 + 10 * 3.0
    assert _steps_cost(0, 10, run_phases([], None, 10), {(None, False): 0.5}) == 5.0
    assert _steps_cost(12, 30, thirds, seconds) == 8 * 2.0 + 10 * 3.0  # past the first phase
    assert _steps_cost(12, 25, thirds, seconds) == 8 * 2.0 + 5 * 3.0  # a stop before the end


def test_steps_cost_counts_the_late_freeze_as_its_own_phase():
    # frozen from step 25 of 30: the last 5 steps of the 6 px phase cost what frozen ones do
    phases = run_phases([4, 5, 6], 0.85, 30)
    assert phases[-2:] == [(20, 25, (6, False)), (25, 30, (6, True))]
    seconds = {(4, False): 1.0, (5, False): 2.0, (6, False): 3.0, (6, True): 2.0}
    assert _steps_cost(0, 30, phases, seconds) == 10 * 1.0 + 10 * 2.0 + 5 * 3.0 + 5 * 2.0


def test_recheck_fills_what_is_left_of_the_budget_at_the_measured_rate():
    plan = dataclasses.replace(budget_plan(loop_config(epochs=100)), budget_check=_check())
    steps = recheck(plan, step_s=0.1, now=10.0)
    left = 100 * (1 - RECHECK_MARGIN) - 10 - RECHECK_TAIL_S - 200 * 0.001

    def cost(total):  # the steps left, and a validation pass + checkpoint per epoch
        return (total - 40) * 0.1 + -(-total // 64) * (100 * 0.001 + 0.5)

    assert cost(steps) <= left < cost(steps + 1)
    assert recheck(plan, step_s=0.2, now=10.0) < steps  # a slower machine: fewer steps
    assert recheck(plan, step_s=0.1, now=30.0) < steps  # more of the budget already spent
    assert recheck(plan, step_s=1e-5, now=10.0) == 5000  # never more than the epochs asked for
    assert recheck(plan, step_s=10.0, now=90.0) == 41  # at least the steps already trained + 1
    # a calibration without per-size samples: the run's own rate, the evaluation as sampled
    unsampled = dataclasses.replace(plan, budget_check=_check(size_step_s=()))
    assert recheck(unsampled, step_s=0.1, now=10.0) == steps


def test_recheck_scales_every_sample_by_the_runs_own_rate():
    cfg = loop_config(epochs=100)
    cfg.data.progressive_sizes = [4, 6]
    plan = dataclasses.replace(budget_plan(cfg), budget_check=_check(size_step_s=((4, 0.05), (6, 0.1))))
    # the run trains its first size 2x slower than sampled: the machine is 2x slower now, for
    # the second size and the evaluation too
    slower = dataclasses.replace(plan, budget_check=_check(size_step_s=((4, 0.1), (6, 0.2)),
                                                           eval_image_s=0.002))
    assert recheck(plan, step_s=0.1, now=10.0) == recheck(slower, step_s=0.1, now=10.0)
    assert recheck(plan, step_s=0.1, now=10.0) < recheck(plan, step_s=0.05, now=10.0)


def test_the_check_comes_before_the_warm_up_the_first_resize_and_the_first_epoch_end():
    cfg = loop_config(epochs=12)
    cfg.schedule.warmup_frac, cfg.data.progressive_sizes = 0.15, [4, 5, 6]
    cal = Calibration(0.1, 0.001, 10, 1.0, size_step_s=((4, 0.05), (5, 0.07), (6, 0.1)))
    plan = budget_plan(cfg).with_steps(700)
    check = plan_check(plan, cal, budget_s=300, started=0.0, val_images=100, final_images=200, cap=768)
    warmup = round(0.15 * 700)
    assert check is not None and check.from_step < check.at_step < min(warmup, 700 // 3, 64)
    assert check.at_step - check.from_step >= 20
    cfg.schedule.warmup_frac = 0.0  # no warm-up: the first step's rate depends on the length
    assert plan_check(budget_plan(cfg).with_steps(700), cal, budget_s=300, started=0.0,
                      val_images=100, final_images=200, cap=768) is None


def test_a_replanned_run_saves_its_new_length_and_reruns_bit_for_bit(tmp_path, monkeypatch, capsys):
    cfg = loop_config(epochs=3)
    cfg.schedule.name, cfg.schedule.warmup_frac = "onecycle", 0.3
    plan = budget_plan(cfg).with_steps(150, warmup_steps=45, check=_check(cap=192))
    monkeypatch.setattr("resnetlab.engine.loop.recheck", lambda plan, step_s, now: 170)
    val = [blobs(64, seed=1)]
    first_model = small_net()
    first = fit(first_model, budget_loader(), val, plan, tmp_path / "first", num_classes=NUM_CLASSES,
                progress=False)
    assert first.steps == 170
    assert "re-planned from this run's steps 10-40" in capsys.readouterr().err
    saved = RunConfig.from_yaml(tmp_path / "first" / "config.yaml")
    assert saved.train.steps == 170 and saved.train.epochs == 3
    assert saved.schedule.warmup_frac == 0.0 and round(saved.schedule.warmup_epochs * 64) == 45
    # the first 40 steps had the same rates under 150 steps as they have under 170
    before, after = (lr_schedule(saved.schedule, cfg.optim.lr, n, 64) for n in (150, 170))
    assert [before(t) for t in range(41)] == [after(t) for t in range(41)]

    second = fit(small_net(), budget_loader(), val, saved, tmp_path / "second", num_classes=NUM_CLASSES,
                 progress=False)
    assert second.steps == 170
    a, b = (safetensors.torch.load_file(r.last_checkpoint / "model.safetensors") for r in (first, second))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_real_recheck_runs_inside_fit(tmp_path, capsys):
    # no stub: the run's own steps are timed; an hour's budget fits every step asked for
    cfg = loop_config(epochs=3)
    cfg.schedule.name, cfg.schedule.warmup_frac = "onecycle", 0.3
    check = _check(budget_s=3600.0, started=time.perf_counter(), cap=192)
    plan = budget_plan(cfg).with_steps(150, warmup_steps=45, check=check)
    result = fit(small_net(), budget_loader(), [blobs(64, seed=1)], plan, tmp_path / "r",
                 num_classes=NUM_CLASSES, progress=False)
    assert result.steps == 192
    assert "150 -> 192 steps" in capsys.readouterr().err


def _deadline(**changes) -> Deadline:
    base = dict(budget_s=100.0, started=0.0, size_step_s=((None, 0.1),), eval_image_s=0.001,
                val_images=100, final_images=200)
    return Deadline(**{**base, **changes})


def test_deadline_keeps_a_run_on_pace_and_stops_a_slow_one_where_it_still_fits():
    plan = dataclasses.replace(budget_plan(loop_config(epochs=10)).with_steps(600), deadline=_deadline())
    # 600 steps at 0.1 s: 60 s of steps + 10 validations + the final evaluation fit in 100 s
    assert deadline_stop(plan, (None, False), step_s=0.1, now=5.0, step=50) == 600
    # the machine is 2x slower now: stop at the last step that ends inside the budget
    stop = deadline_stop(plan, (None, False), step_s=0.2, now=5.0, step=50)
    left = 100 * (1 - DEADLINE_MARGIN) - 5.0 - RECHECK_TAIL_S - 200 * 0.002

    def cost(at):  # steps 50..at-1, and a validation + checkpoint per epoch reached (64 a epoch)
        return (at - 50) * 0.2 + -(-at // 64) * (100 * 0.002 + 0.5)

    assert 50 < stop < 600 and cost(stop) <= left < cost(stop + 1)
    assert deadline_stop(plan, (None, False), step_s=0.2, now=99.0, step=50) == 50  # nothing fits: now
    # a run's own --max-steps is the latest it stops
    capped = dataclasses.replace(plan, deadline=_deadline(max_steps=300))
    assert deadline_stop(capped, (None, False), step_s=0.1, now=5.0, step=50) == 300


def test_deadline_scales_every_size_by_the_rate_of_the_one_training_now():
    cfg = loop_config(epochs=10)
    cfg.data.progressive_sizes = [4, 6]
    sampled = _deadline(size_step_s=((4, 0.05), (6, 0.1)))
    plan = dataclasses.replace(budget_plan(cfg).with_steps(600), deadline=sampled)
    # the second size trains 2x slower than sampled: the rest of it, and the evaluation, too
    slow = deadline_stop(plan, (6, False), step_s=0.2, now=40.0, step=350)
    halved = dataclasses.replace(plan, deadline=_deadline(size_step_s=((4, 0.1), (6, 0.2)),
                                                          eval_image_s=0.002))
    assert slow == deadline_stop(halved, (6, False), step_s=0.2, now=40.0, step=350) < 600
    assert deadline_stop(plan, (6, False), step_s=0.1, now=40.0, step=350) == 600


def test_deadline_counts_frozen_steps_at_their_own_sampled_cost():
    cfg = loop_config(epochs=10)
    cfg.data.progressive_sizes, cfg.train.late_freeze = [4, 6], 0.75
    sampled = _deadline(size_step_s=((4, 0.05), (6, 0.1)), frozen_step_s=((6, 0.05),))
    plan = dataclasses.replace(budget_plan(cfg).with_steps(600), deadline=sampled)
    # at 2x the sample's cost in the unfrozen 6 px phase, steps 350-449 cost 0.2 s and the
    # frozen ones from 450 on 0.1 s
    slow = deadline_stop(plan, (6, False), step_s=0.2, now=60.0, step=350)
    left = 100 * (1 - DEADLINE_MARGIN) - 60.0 - RECHECK_TAIL_S - 200 * 0.002

    def cost(at):  # 0.2 s a step to 450, 0.1 s after; a validation + checkpoint an epoch
        steps = (min(at, 450) - 350) * 0.2 + max(at - 450, 0) * 0.1
        return steps + (-(-at // 64) - 5) * (100 * 0.002 + 0.5)

    assert 450 < slow < 600 and cost(slow) <= left < cost(slow + 1)
    # unsampled, a frozen step costs its size's unfrozen one: the stop comes sooner
    unsampled = dataclasses.replace(plan, deadline=_deadline(size_step_s=((4, 0.05), (6, 0.1))))
    assert deadline_stop(unsampled, (6, False), step_s=0.2, now=60.0, step=350) < slow


def test_deadline_does_not_judge_a_phase_the_sample_skipped():
    # frozen from 0.67 of a run in halves: the 6 px steps before the freeze are a sliver the
    # calibration does not time; their (unfrozen, costlier) rate says nothing of the frozen
    # steps after them, so the deadline lets them pass instead of stopping the run
    cfg = loop_config(epochs=10)
    cfg.data.progressive_sizes, cfg.train.late_freeze = [4, 6], 0.67
    sampled = _deadline(size_step_s=((4, 0.05),), frozen_step_s=((6, 0.05),))
    plan = dataclasses.replace(budget_plan(cfg).with_steps(600), deadline=sampled)
    assert deadline_stop(plan, (6, False), step_s=0.5, now=60.0, step=305) == 600
    assert deadline_stop(plan, (6, True), step_s=0.5, now=60.0, step=405) < 600  # judged again


def test_a_run_slower_than_its_plan_stops_early_and_reruns_bit_for_bit(tmp_path, monkeypatch, capsys):
    cfg = loop_config(epochs=3)
    cfg.schedule.name = "onecycle"
    plan = dataclasses.replace(budget_plan(cfg).with_steps(192), deadline=_deadline())
    looks = []

    def slow_machine(plan, size, step_s, now, step):  # the deadline: stop at step 150
        looks.append(step)
        return 150

    monkeypatch.setattr("resnetlab.engine.loop.deadline_stop", slow_machine)
    val = [blobs(64, seed=1)]
    first = fit(small_net(), budget_loader(), val, plan, tmp_path / "first", num_classes=NUM_CLASSES,
                progress=False)
    assert first.steps == 150 and first.history[-1]["step"] == 150  # validated where it stopped
    # a window starts DEADLINE_SETTLE steps into an epoch (64 steps), lasts half of what is
    # left of it (29 steps), and never spans an epoch's end (its validation is not a step)
    window = deadline_window(plan)
    assert window == (64 - DEADLINE_SETTLE) // 2 == 29
    look = 1 + DEADLINE_SETTLE + window
    assert looks == [look, look + window, 64 + look, 64 + look + window]
    assert "stopping at step 150 of 192" in capsys.readouterr().err
    saved = RunConfig.from_yaml(tmp_path / "first" / "config.yaml")
    assert saved.train.budget_stop == 150 and saved.train.steps == 192  # the schedule as planned
    second = fit(small_net(), budget_loader(), val, saved, tmp_path / "second", num_classes=NUM_CLASSES,
                 progress=False)
    assert second.steps == 150
    a, b = (safetensors.torch.load_file(r.last_checkpoint / "model.safetensors") for r in (first, second))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_real_deadline_keeps_every_step_of_a_run_on_pace(tmp_path, capsys):
    cfg = loop_config(epochs=3)
    hour = _deadline(budget_s=3600.0, started=time.perf_counter())
    plan = dataclasses.replace(budget_plan(cfg).with_steps(192), deadline=hour)
    result = fit(small_net(), budget_loader(), [blobs(64, seed=1)], plan, tmp_path / "r",
                 num_classes=NUM_CLASSES, progress=False)
    assert result.steps == 192 and "time budget" not in capsys.readouterr().err
    assert RunConfig.from_yaml(tmp_path / "r" / "config.yaml").train.budget_stop is None


def test_a_length_given_anew_clears_a_deadlines_stop():
    # a saved config.yaml of a stopped run: rerun as it is, it stops there; --epochs or a new
    # --time-budget decide the length again, and the old stop must not cap them
    saved = loop_config(epochs=3)
    saved.train.steps, saved.train.budget_stop, saved.train.time_budget = 192, 150, "5m"
    assert config_with(saved, {}).train.budget_stop == 150
    assert config_with(saved, {"train.epochs": 30}).train.budget_stop is None
    again = config_with(saved, {"train.time_budget": "10m"})
    assert again.train.budget_stop is None and again.train.steps is None


def test_the_deadline_window_fits_short_epochs_and_phases():
    long_epochs = dataclasses.replace(budget_plan(loop_config(epochs=10)), steps_per_epoch=430)
    assert deadline_window(long_epochs.with_steps(2000)) == DEADLINE_EVERY
    cfg = loop_config(epochs=10)
    cfg.data.progressive_sizes = [4, 5, 6]
    assert deadline_window(budget_plan(cfg).with_steps(90)) == (30 - DEADLINE_SETTLE) // 2  # phases of 30
    tiny = dataclasses.replace(budget_plan(loop_config(epochs=10)), steps_per_epoch=12)
    assert deadline_window(tiny.with_steps(120)) == DEADLINE_MIN_WINDOW
