"""A time-budgeted run moves its end once, in its last phase, from its own rate there (issue 25).

The plan priced the later phases from ten sampled steps each, which read a phase up to 10% off;
AVX2 runs on a Zen 4 ended 16-44 s before their 5 minutes.  In the last phase (one input size
and freeze to the end) the run's own rate prices the rest, so the end moves there
(``train.budget_end``), the rest of the schedule stretched or squeezed to it.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import safetensors.torch
import torch

from helpers import NUM_CLASSES, blobs, budget_loader, budget_plan, loop_config, small_net
from resnetlab.engine import fit
from resnetlab.engine.config import RunConfig
from resnetlab.engine.plan import Deadline, planned_steps
from resnetlab.engine.replan import REAIM_MARGIN, REAIM_STEPS, RECHECK_TAIL_S, reaim
from resnetlab.engine.schedules import (
    input_size_schedule,
    lr_schedule,
    moved_end,
    run_phases,
    stretch,
)
from resnetlab.run import config_with
from resnetlab.utils.errors import ConfigError


def _deadline(**changes) -> Deadline:
    base = dict(budget_s=100.0, started=0.0, size_step_s=((4, 0.05), (6, 0.1)), eval_image_s=0.001,
                val_images=100, final_images=200, cap=1000)
    return Deadline(**{**base, **changes})


def test_a_moved_end_keeps_the_steps_before_it_and_stretches_the_rest():
    cfg = loop_config(epochs=10).schedule
    cfg.name = "onecycle"
    lr = lr_schedule(cfg, 0.1, 100, 10)
    longer, shorter = stretch(lr, 100, (60, 140)), stretch(lr, 100, (60, 80))
    assert [longer(s) for s in range(60)] == [lr(s) for s in range(60)] == [shorter(s) for s in range(60)]
    assert longer(100) == pytest.approx(lr(80)) and shorter(70) == pytest.approx(lr(80))
    assert longer(139) == pytest.approx(lr(99.5)) and shorter(79) == pytest.approx(lr(98))
    assert longer(139) < lr(99) + 1e-3  # the rate still decays to its end, on the new last step
    # a size phase after the step moves with the end: 4 px to step 50 of 100, now to 57 of 140
    size = stretch(input_size_schedule([4, 6], 100), 100, (40, 140))
    assert [size(s) for s in (39, 56, 57, 139)] == [4, 4, 6, 6]
    assert moved_end(run_phases([4, 6], None, 100), 100, (40, 140)) == [(0, 57, (4, False)),
                                                                       (57, 140, (6, False))]


def _last_phase_plan(**deadline):
    cfg = loop_config(epochs=20)
    cfg.data.progressive_sizes = [4, 6]  # 6 px from step 300 of 600
    return dataclasses.replace(budget_plan(cfg).with_steps(600), deadline=_deadline(**deadline))


def _cost(end, step_s, speed=1.0):  # from step 400: its steps, a validation + checkpoint an epoch
    return (end - 400) * step_s + (-(-end // 64) - 6) * (100 * 0.001 * speed + 0.5)


def _left(now, speed=1.0):
    return 100 * (1 - REAIM_MARGIN) - now - RECHECK_TAIL_S - 200 * 0.001 * speed


def test_the_last_phase_moves_the_end_to_what_its_own_rate_fits():
    plan = _last_phase_plan()
    # on pace with room to spare: later, as far as the budget (less its margin) allows
    later = reaim(plan, (6, False), step_s=0.1, now=40.0, step=400, timed=REAIM_STEPS)
    assert 600 < later < 1000 and _cost(later, 0.1) <= _left(40.0) < _cost(later + 1, 0.1)
    # 2x slower than sampled (the evaluation too): sooner, the decay squeezed instead of cut
    sooner = reaim(plan, (6, False), step_s=0.2, now=80.0, step=400, timed=REAIM_STEPS)
    assert 400 < sooner < 600 and _cost(sooner, 0.2, 2.0) <= _left(80.0, 2.0) < _cost(sooner + 1, 0.2, 2.0)
    # never past the budget's epochs
    assert reaim(_last_phase_plan(cap=700), (6, False), step_s=0.1, now=40.0, step=400,
                 timed=REAIM_STEPS) == 700
    # the planned end is the one: nothing moves
    assert reaim(_last_phase_plan(cap=600), (6, False), step_s=0.1, now=40.0, step=400,
                 timed=REAIM_STEPS) is None


def test_the_end_moves_once_in_the_last_phase_from_enough_of_its_steps():
    plan = _last_phase_plan()
    look = dict(step_s=0.1, now=40.0, step=400, timed=REAIM_STEPS)
    assert reaim(plan, (6, False), **{**look, "timed": REAIM_STEPS - 1}) is None
    assert reaim(plan, (4, False), **{**look, "step": 200}) is None  # a size still to come
    moved = plan.with_end(400, reaim(plan, (6, False), **look))
    assert reaim(moved, (6, False), **{**look, "step": 450}) is None  # once
    assert reaim(plan.with_stop(500), (6, False), **look) is None  # the deadline stopped it
    capped = dataclasses.replace(plan, deadline=_deadline(max_steps=550))
    assert reaim(capped, (6, False), **look) is None  # a run's own --max-steps is its end


def test_a_run_whose_end_moved_saves_it_and_reruns_bit_for_bit(tmp_path, monkeypatch, capsys):
    cfg = loop_config(epochs=3)
    cfg.schedule.name = "onecycle"
    hour = _deadline(budget_s=3600.0, started=time.perf_counter(), size_step_s=((None, 0.1),))
    plan = dataclasses.replace(budget_plan(cfg).with_steps(120), deadline=hour)

    def faster_machine(plan, phase, step_s, now, step, timed):  # move the end at the first look
        return 170 if plan.config.train.budget_end is None else None

    monkeypatch.setattr("resnetlab.engine.loop.reaim", faster_machine)
    val = [blobs(64, seed=1)]
    first = fit(small_net(), budget_loader(), val, plan, tmp_path / "first", num_classes=NUM_CLASSES,
                progress=False)
    assert first.steps == 170 and first.history[-1]["step"] == 170
    assert "120 -> 170 steps" in capsys.readouterr().err
    saved = RunConfig.from_yaml(tmp_path / "first" / "config.yaml")
    at, end = saved.train.budget_end
    assert end == 170 and 0 < at < 120 and saved.train.steps == 120 and saved.train.epochs == 3
    second = fit(small_net(), budget_loader(), val, saved, tmp_path / "second", num_classes=NUM_CLASSES,
                 progress=False)
    assert second.steps == 170
    a, b = (safetensors.torch.load_file(r.last_checkpoint / "model.safetensors") for r in (first, second))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_moved_end_is_checked_and_a_length_given_anew_clears_it():
    with pytest.raises(ConfigError, match="budget_end"):
        RunConfig.from_dict({"train": {"steps": 100, "budget_end": [90, 80]}})
    with pytest.raises(ConfigError, match="budget_end"):  # from a step past the schedule's end
        planned_steps(RunConfig.from_dict({"train": {"steps": 100, "budget_end": [120, 150]}}).train, 64)
    with pytest.raises(ConfigError, match="budget_end"):  # to a step past the epochs
        planned_steps(RunConfig.from_dict({"train": {"epochs": 2, "steps": 100,
                                                     "budget_end": [90, 150]}}).train, 64)
    saved = loop_config(epochs=3)
    saved.train.steps, saved.train.budget_end, saved.train.time_budget = 120, (90, 170), "5m"
    assert config_with(saved, {}).train.budget_end == (90, 170)
    assert config_with(saved, {"train.epochs": 30}).train.budget_end is None
    assert config_with(saved, {"train.time_budget": "10m"}).train.budget_end is None
