"""Issue 19 item 2: a run is checked once, at its edge, into an immutable plan.

The plan (``resnetlab.engine.plan``) holds the checks that need the data, the task or the
model; below it the loop, optimiser, schedule and tracker check nothing again.
"""

from __future__ import annotations

import dataclasses

import pytest

from helpers import SeededLoader, blobs, loop_config, small_net, tiny_config, write_folder
from resnetlab import run
from resnetlab.engine import loop
from resnetlab.engine import plan as plan_module
from resnetlab.engine.config import RunConfig
from resnetlab.engine.plan import RunPlan, make_plan
from resnetlab.engine.task import Classification, Regression
from resnetlab.run import experiment
from resnetlab.utils.errors import ConfigError


def _loader(n: int = 64, batch: int = 16) -> SeededLoader:
    return SeededLoader(*blobs(n), batch)


def test_plan_fixes_the_runs_numbers():
    cfg = loop_config(epochs=3, max_steps=7)
    plan = make_plan(cfg, _loader(), task=Classification(2), has_val=True)
    assert (plan.steps_per_epoch, plan.schedule_steps, plan.total_steps) == (4, 12, 7)
    assert plan.metric == "val_top1" and plan.has_val


def test_plan_is_immutable_and_keeps_its_own_config():
    cfg = loop_config(epochs=3)
    plan = make_plan(cfg, _loader(), task=Classification(2), has_val=True,
                     lr_scales={"fc.weight": 10.0})
    cfg.train.epochs = 99  # the caller's object changes after planning: the plan does not
    cfg.optim.lr = 5.0
    assert plan.config.train.epochs == 3 and plan.config.optim.lr != 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.total_steps = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.lr_scales["fc.weight"] = 1.0  # type: ignore[index]


def test_with_steps_fixes_steps_and_the_epochs_that_hold_them():
    plan = make_plan(loop_config(epochs=10), _loader(), task=Classification(2), has_val=True)
    short = plan.with_steps(9)
    assert (short.schedule_steps, short.total_steps) == (9, 9)
    assert (short.config.train.steps, short.config.train.epochs) == (9, 3)
    assert plan.config.train.steps is None  # the plan it came from is unchanged


@pytest.mark.parametrize(("change", "loader", "says"), [
    ({}, object(), "the training loader has no len()"),
    ({}, [], "gives 0 batches per epoch"),
    ({"steps": 13}, None, r"--set train.steps=13 needs --epochs >= 4 \(4 steps per epoch\)"),
    ({"early_stop_patience": 2}, None, "--early-stop needs a validation split"),
])
def test_plan_errors_are_one_line(change, loader, says):
    cfg = loop_config(epochs=3, **change)
    with pytest.raises(ConfigError, match=says) as err:
        make_plan(cfg, _loader() if loader is None else loader, task=Classification(2),
                  has_val=False)
    assert "\n" not in str(err.value)


def test_a_model_with_nothing_to_train_is_refused_by_the_plan():
    model = small_net()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        make_plan(loop_config(), _loader(), task=Classification(2), has_val=True, model=model)


def test_regression_picks_rmse():
    plan = make_plan(loop_config(), _loader(), task=Regression(1.0, 0.0), has_val=True)
    assert plan.metric == "val_rmse"


def test_fit_with_a_plan_does_not_check_or_plan_again(tmp_path, monkeypatch):
    """Given a plan, fit builds the run from it as it is (no validate, no make_plan)."""
    plan = make_plan(loop_config(epochs=1), _loader(), task=Classification(2), has_val=False)
    monkeypatch.setattr(loop, "validate", lambda *a, **k: pytest.fail("validated again"))
    monkeypatch.setattr(loop, "make_plan", lambda *a, **k: pytest.fail("planned again"))
    result = loop.fit(small_net(), _loader(), None, plan, tmp_path / "run", num_classes=2,
                      progress=False)
    assert result.steps == plan.total_steps == 4
    with pytest.raises(TypeError, match="belong to the plan"):
        loop.fit(small_net(), _loader(), None, plan, tmp_path / "again", num_classes=2,
                 task=Classification(2))


def test_a_run_is_planned_once(tmp_path, monkeypatch):
    """``run.train`` validates the config once and plans it once, with a time budget too (the
    calibration times the run's own plan)."""
    calls = {"validate": 0, "make_plan": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(experiment, "validate", counted("validate", experiment.validate))
    monkeypatch.setattr(experiment, "make_plan", counted("make_plan", plan_module.make_plan))
    monkeypatch.setattr(loop, "make_plan", lambda *a, **k: pytest.fail("fit planned again"))
    monkeypatch.setattr("resnetlab.engine.budget.make_plan",
                        lambda *a, **k: pytest.fail("calibration planned again"))
    cfg = tiny_config(write_folder(tmp_path / "animals"), tmp_path / "runs", "once")
    cfg.train.time_budget, cfg.train.max_steps = "10m", 3  # max_steps: a 3-step run
    made = run.train(cfg, progress=False)
    assert calls == {"validate": 1, "make_plan": 1}
    assert made.config.train.steps is not None  # the budget fixed the plan's steps
    assert isinstance(made.config, RunConfig) and not isinstance(made.config, RunPlan)



def test_the_engine_alone_trains_default_sizes_at_full_size():
    cfg = RunConfig()
    cfg.data.progressive_sizes = "default"
    plan = make_plan(cfg, [0, 1], task=Classification(2), has_val=True)
    assert plan.config.data.progressive_sizes == [] and cfg.data.progressive_sizes == "default"
