"""``--time-budget``: durations, the step plan, and a budgeted run that reruns identically."""

from __future__ import annotations

import math

import pytest
import safetensors.torch
import torch

from helpers import FLAGS, cli, one_line_error, tiny_config, write_folder
from resnetlab import run
from resnetlab.engine import budget as engine_budget
from resnetlab.engine.budget import Calibration, calibrate, plan_steps
from resnetlab.run.build import build_data_and_model
from resnetlab.utils.duration import format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [("5m", 300), ("4.5min", 270), ("90s", 90),
                                           ("1h30m", 5400), ("300", 300), (" 2 m ", 120), (45, 45)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "m", "", "0", "-3m", "5m30", "inf", True, float("nan")])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (300, 270, 45, 100)] == ["5 min", "4.5 min", "45 s", "100 s"]


def test_plan_fills_the_budget_with_steps_and_their_evaluations():
    cal = Calibration(step_s=0.1, eval_image_s=0.001, measured_steps=10, calibrate_s=1.0)
    kw = dict(per_epoch=100, val_images=1000, final_images=2000)
    steps = plan_steps(100, 0, cal, **kw)
    # 93 s (7% margin) - 4 s fixed - 2 s final test = 87 s; 8 epochs of 1.5 s eval + checkpoint
    # leave 75 s = 750 steps, and 750 steps are 8 epochs
    assert steps == 750
    assert plan_steps(100, 10, cal, **kw) < steps < plan_steps(200, 0, cal, **kw)
    slower = Calibration(0.2, 0.001, 10, 1.0)
    assert plan_steps(100, 0, slower, **kw) < steps
    assert plan_steps(5, 0, cal, **kw) == 0  # the fixed costs alone overrun


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "animals")


def test_calibrate_times_real_steps_and_leaves_the_model_alone(folder, tmp_path):
    cfg = tiny_config(folder, tmp_path, "cal")
    bundle, model = build_data_and_model(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cal = calibrate(model, bundle.train, next(iter(bundle.val))[0], cfg, steps=6, warmup=2)
    assert cal.measured_steps == 6 and cal.step_s > 0 and cal.eval_image_s > 0
    assert cal.calibrate_s >= 6 * cal.step_s
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_budgeted_run_saves_its_steps_and_reruns_them(folder, tmp_path, monkeypatch):
    fake = Calibration(step_s=0.01, eval_image_s=0.001, measured_steps=10, calibrate_s=0.0)
    monkeypatch.setattr("resnetlab.run.budget.calibrate", lambda *a, **k: fake)
    cfg = tiny_config(folder, tmp_path, "budget")
    cfg.train.time_budget, cfg.train.epochs = "10s", 1000  # the budget, not the epochs, decides
    first = run.train(cfg, progress=False)
    saved = run.Run.open(first.run_dir).config.train
    per_epoch = len(build_data_and_model(cfg, torch.device("cpu"))[0].train)
    assert saved.steps == first.results["steps"] > engine_budget.MIN_STEPS
    assert saved.epochs == math.ceil(saved.steps / per_epoch) and saved.time_budget == "10s"
    assert first.results["epochs"] == pytest.approx(saved.steps / per_epoch, abs=1e-3)

    def no_calibration(*args, **kwargs):
        raise AssertionError("a config with decided steps must not be measured again")

    monkeypatch.setattr("resnetlab.run.budget.calibrate", no_calibration)
    again = run.Run.open(first.run_dir).config
    again.name = "rerun"
    second = run.train(again, progress=False)
    assert second.results["steps"] == saved.steps
    a, b = (safetensors.torch.load_file(r.last / "model.safetensors") for r in (first, second))
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic: the same steps, bit for bit


def test_summary_names_the_budget(folder, tmp_path, capsys, monkeypatch):
    fake = Calibration(step_s=0.01, eval_image_s=0.001, measured_steps=10, calibrate_s=0.0)
    monkeypatch.setattr("resnetlab.run.budget.calibrate", lambda *a, **k: fake)
    code, out, _ = cli(capsys, "train", f"--data=folder:{folder}", *FLAGS, "--time-budget", "10s",
                       "--runs-dir", tmp_path)
    assert code == 0
    line = next(row for row in out.splitlines() if "budget 10 s:" in row)
    assert "steps" in line and "epochs" in line


@pytest.mark.parametrize("value, says", [("5x", "--time-budget '5x': must be a duration"),
                                         ("0.5s", "--time-budget 0.5s: only 0 training steps fit")])
def test_bad_or_too_small_budget_is_one_line(folder, tmp_path, capsys, value, says):
    code, _, err = cli(capsys, "train", f"--data=folder:{folder}", *FLAGS, "--time-budget", value,
                       "--runs-dir", tmp_path)
    assert code == 2 and one_line_error(err).startswith(f"error: {says}")
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_steps_set_by_hand_must_fit_the_epochs():
    from resnetlab.engine.config import TrainConfig
    from resnetlab.engine.plan import planned_steps
    from resnetlab.utils.errors import ConfigError

    assert planned_steps(TrainConfig(epochs=3), 10) == 30
    assert planned_steps(TrainConfig(epochs=3, steps=25), 10) == 25
    with pytest.raises(ConfigError, match=r"train.steps=31 needs --epochs >= 4"):
        planned_steps(TrainConfig(epochs=3, steps=31), 10)


def test_data_parallel_ranks_plan_their_share_of_the_evaluations(folder, tmp_path, monkeypatch):
    """Each of N ranks evaluates every N-th batch, so a rank's plan counts 1/N of the images
    (counting them all left a 2-rank 5-minute run 22 s short of its budget)."""
    from resnetlab.engine import distributed
    from resnetlab.engine.plan import make_plan
    from resnetlab.engine.task import Classification
    from resnetlab.run.budget import apply_time_budget

    fake = Calibration(step_s=0.01, eval_image_s=0.001, measured_steps=10, calibrate_s=0.0)
    monkeypatch.setattr("resnetlab.run.budget.calibrate", lambda *a, **k: fake)
    seen = []
    monkeypatch.setattr("resnetlab.run.budget.plan_steps",
                        lambda *a, **kw: seen.append(kw) or plan_steps(*a, **kw))
    cfg = tiny_config(folder, tmp_path, "share")
    cfg.train.time_budget = "10s"
    bundle, model = build_data_and_model(cfg, torch.device("cpu"))
    plan = make_plan(cfg, bundle.train, task=Classification(3), has_val=True)
    one = apply_time_budget(plan, model, bundle, spent_s=0.0)
    monkeypatch.setattr(distributed, "dist_info", lambda: distributed.DistInfo(0, 2, 0))
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: obj)
    two = apply_time_budget(plan, model, bundle, spent_s=0.0)
    assert seen[1]["val_images"] == math.ceil(seen[0]["val_images"] / 2) > 0
    assert seen[1]["final_images"] == math.ceil(seen[0]["final_images"] / 2) > 0
    assert two.deadline.val_images == seen[1]["val_images"]
    assert two.schedule_steps >= one.schedule_steps
