"""Item 15 of issue 22: ``--time-budget 60s`` is refused or planned in time proportional to the
budget: calibration stops after a tenth of it (at least 2 s), and a budget the data loading
already used up is refused before any timing.  A fake clock drives the timing: no waiting."""

from __future__ import annotations

import itertools
import types

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import cli, one_line_error
from resnetlab import run
from resnetlab.engine import budget as engine_budget
from resnetlab.engine.plan import make_plan
from resnetlab.engine.task import Classification
from resnetlab.run import budget as run_budget
from resnetlab.run.build import build_data_and_model
from resnetlab.utils.errors import ConfigError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget") / "shapes"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(24):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _cfg(folder, tmp_path):
    cfg = run.load_recipe("default")
    cfg.model.name, cfg.model.kwargs = "mlp_resnet", {"num_blocks": 1, "width_mult": 0.0625}
    cfg.data.name, cfg.data.batch_size, cfg.data.val_size = f"folder:{folder}", 8, 8
    cfg.train.device, cfg.train.precision = "cpu", "fp32"
    cfg.runs_dir, cfg.name = str(tmp_path / "runs"), "b"
    return cfg


def test_calibration_stops_at_a_tenth_of_the_budget(folder, tmp_path, monkeypatch):
    cfg = _cfg(folder, tmp_path)
    bundle, model = build_data_and_model(cfg, torch.device("cpu"))
    ticks = itertools.count(0.0, 1.0)  # every clock reading is one second later
    monkeypatch.setattr(engine_budget, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    unbounded = engine_budget.calibrate(model, bundle.train, None, cfg)
    assert unbounded.measured_steps == 10
    ticks = itertools.count(0.0, 1.0)
    cal = engine_budget.calibrate(model, bundle.train, None, cfg, budget_s=60)
    # 6 s of calibration (a tenth of 60 s) at one second per reading: far fewer than 10 steps
    assert 2 <= cal.measured_steps < 10 and cal.calibrate_s <= 12


def test_a_second_calibration_adds_to_the_first(folder, tmp_path):
    cfg = _cfg(folder, tmp_path)
    bundle, model = build_data_and_model(cfg, torch.device("cpu"))
    first = engine_budget.calibrate(model, bundle.train, next(iter(bundle.val))[0], cfg, steps=3)
    again = engine_budget.calibrate(model, bundle.train, None, cfg, timed=first)
    # every phase of this run was timed already: nothing more is, and the time spent adds up
    assert again.measured_steps == first.measured_steps == 3
    assert again.size_step_s == first.size_step_s and again.eval_image_s == first.eval_image_s > 0
    assert again.calibrate_s > first.calibrate_s


def test_budget_used_up_by_loading_is_refused_before_timing(folder, tmp_path, monkeypatch):
    cfg = _cfg(folder, tmp_path)
    cfg.train.time_budget = "60s"
    bundle, model = build_data_and_model(cfg, torch.device("cpu"))
    monkeypatch.setattr(run_budget, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    with pytest.raises(ConfigError, match="reading the data took 70 s"):
        plan = make_plan(cfg, bundle.train, task=Classification(bundle.num_classes), has_val=True)
        run_budget.apply_time_budget(plan, model, bundle, spent_s=70.0)


def test_cli_budget_still_one_line(folder, tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--data", f"folder:{folder}", "--model", "mlp_resnet",
                       "--set", "num_blocks=1", "--device", "cpu", "--no-progress",
                       "--time-budget", "3s", "--runs-dir", tmp_path)
    assert code == 2 and "--time-budget 3s" in one_line_error(err)


def test_one_slow_step_does_not_shorten_the_plan(folder, tmp_path, monkeypatch):
    # a fake clock: every step takes 0.1 s but one, which the host held up for 2 s
    cfg = _cfg(folder, tmp_path)
    bundle, model = build_data_and_model(cfg, torch.device("cpu"))
    clock = {"now": 0.0, "steps": 0}

    def step(*args, **kwargs):
        clock["steps"] += 1
        clock["now"] += 2.0 if clock["steps"] == 7 else 0.1

    monkeypatch.setattr(engine_budget, "train_batch", step)
    monkeypatch.setattr(engine_budget, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    cal = engine_budget.calibrate(model, bundle.train, None, cfg, steps=8, warmup=2)
    assert cal.measured_steps == 8 and cal.step_s == pytest.approx(0.1)  # the mean: 0.34 s
