"""Learning-rate schedules: values at the steps that define them."""

from __future__ import annotations

import math

import pytest

from resnetlab.engine import ScheduleConfig, lr_schedule
from resnetlab.utils.errors import ConfigError


def test_onecycle_linear_warmup_then_linear_decay():
    lr = lr_schedule(ScheduleConfig(name="onecycle", warmup_frac=0.15), 0.2, 100, 10)
    assert lr(0) == pytest.approx(0.2 / 15)  # warm-up starts one step in, never at 0
    assert lr(7) == pytest.approx(0.2 * 8 / 15)
    assert lr(14) == pytest.approx(0.2)  # the last warm-up step reaches the peak
    assert lr(15) == pytest.approx(0.2)
    assert lr(15 + 85 // 2) == pytest.approx(0.2 * (1 - 42 / 85))
    assert lr(99) == pytest.approx(0.2 / 85)
    assert lr(100) == 0.0 and lr(10_000) == 0.0  # past the end: the final value


def test_step_decay_divides_by_ten_at_milestones():
    # He et al. 2016 sec. 4.2: lr 0.1, /10 at 32k and 48k iterations (here: epochs 2 and 3).
    lr = lr_schedule(ScheduleConfig(name="step", milestones=[2, 3], gamma=0.1), 0.1, 40, 10)
    assert [lr(s) for s in (0, 19)] == [pytest.approx(0.1)] * 2
    assert lr(20) == pytest.approx(0.01) and lr(29) == pytest.approx(0.01)
    assert lr(30) == pytest.approx(0.001) and lr(39) == pytest.approx(0.001)


def test_cosine_with_epoch_warmup_and_floor():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1, final_lr_frac=0.1)
    lr = lr_schedule(cfg, 1.0, 110, 10)
    assert lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert lr(110) == pytest.approx(0.1)
    values = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_constant_with_warmup_start_fraction_and_purity():
    lr = lr_schedule(ScheduleConfig(name="constant", warmup_epochs=0.5, warmup_start_frac=0.5), 0.4, 50, 10)
    assert lr(0) == pytest.approx(0.4 * (0.5 + 0.5 / 5))
    assert lr(4) == pytest.approx(0.4) and lr(49) == pytest.approx(0.4)
    forward = [lr(s) for s in range(50)]
    assert [lr(s) for s in reversed(range(50))] == forward[::-1]  # no hidden state


@pytest.mark.parametrize("cfg, match", [
    (ScheduleConfig(name="linear"), "schedule.name"),
    (ScheduleConfig(warmup_epochs=1, warmup_frac=0.1), "both set"),
    (ScheduleConfig(name="step", milestones=[3, 2]), "milestones"),
    (ScheduleConfig(warmup_frac=1.5), "warmup_frac 1.5 must be a fraction of all steps in"),
    (ScheduleConfig(warmup_frac=1.0), r"\[0, 1\)"),
])
def test_bad_schedules_are_config_errors(cfg, match):
    """Checked once, with the whole config (engine.config.validate), not by lr_schedule."""
    from resnetlab.engine.config import RunConfig, validate

    with pytest.raises(ConfigError, match=match):
        validate(RunConfig(schedule=cfg))


def test_a_run_without_a_step_is_refused_by_its_plan():
    """An empty loader (no batch, so no step) is the plan's one-line error, before the schedule
    is made (issue 19 item 2: the schedule below the plan checks nothing again)."""
    from resnetlab.engine.config import RunConfig
    from resnetlab.engine.plan import make_plan
    from resnetlab.engine.task import Classification

    with pytest.raises(ConfigError, match="0 batches per epoch"):
        make_plan(RunConfig(), [], task=Classification(2), has_val=False)


def test_warmup_longer_than_run_is_clamped():
    lr = lr_schedule(ScheduleConfig(name="cosine", warmup_epochs=50), 1.0, 20, 10)
    assert lr(19) == pytest.approx(1.0) and not math.isnan(lr(25))
