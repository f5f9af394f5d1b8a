"""The main job's recipe (issue 25): a 5-minute budget that caps the default 6 epochs, the
data's own progressive resizing, and a run length that is given one way."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import pytest
import yaml

from helpers import FLAGS, TINY, cli, needs_fmnist, one_line_error, write_folder
from resnetlab import run
from resnetlab.cli.options import flag_overrides
from resnetlab.engine.config import OPTIONS
from resnetlab.run.build import own_late_freeze, own_progressive_sizes


def test_the_default_recipe_is_the_five_minute_main_job():
    cfg = run.load_recipe("default")
    assert cfg.train.time_budget == "5m" and cfg.train.epochs == 6
    assert cfg.data.progressive_sizes == "default" and cfg.optim.lr == 0.2
    assert cfg.train.late_freeze == "default"


@pytest.mark.parametrize("given, budget, steps", [
    ({}, "5m", None),                                        # the main job: the recipe's budget
    ({"train.epochs": 2}, None, None),                       # --epochs replaces the budget
    ({"train.steps": 50}, None, 50),
    ({"train.time_budget": "1m"}, "1m", None),
    ({"train.time_budget": "1m", "train.epochs": 2}, "1m", None),  # both given: both hold
])
def test_a_run_length_is_given_one_way(given, budget, steps):
    cfg = run.config_with("default", given)
    assert (cfg.train.time_budget, cfg.train.steps) == (budget, steps)


def test_a_saved_budgeted_config_given_a_new_budget_plans_again():
    saved = run.config_with("default", {"train.steps": 1700, "train.time_budget": "5m"})
    assert saved.train.steps == 1700  # both given (a saved config.yaml): its steps are kept
    again = run.config_with(saved, {"train.time_budget": "2m"})
    assert again.train.steps is None and again.train.time_budget == "2m"


def _flag(key: str, value: str) -> dict:
    return flag_overrides({OPTIONS[key].param: value})


def test_none_turns_the_budget_and_the_resizing_off():
    assert _flag("train.time_budget", "none") == {"train.time_budget": None}
    assert _flag("train.time_budget", "90s") == {"train.time_budget": "90s"}
    assert _flag("data.progressive_sizes", "none") == {"data.progressive_sizes": []}
    assert _flag("data.progressive_sizes", "default") == {"data.progressive_sizes": "default"}
    assert _flag("data.progressive_sizes", "20,28") == {"data.progressive_sizes": [20, 28]}
    assert _flag("train.late_freeze", "none") == {"train.late_freeze": None}
    assert _flag("train.late_freeze", "0.5") == {"train.late_freeze": "0.5"}  # coerced later
    assert run.config_with("default", {"train.late_freeze": "0.5"}).train.late_freeze == 0.5


def _bundle(kind: str, shape: tuple[int, ...]) -> SimpleNamespace:
    return SimpleNamespace(meta={"kind": kind}, input_shape=shape)


def test_the_data_own_sizes_are_fashion_mnist_at_its_stored_size_only():
    assert own_progressive_sizes("fashion-mnist", _bundle("image", (1, 28, 28))) == [20, 24, 28]
    assert own_progressive_sizes("fashion-mnist", _bundle("image", (1, 32, 32))) == []  # resized
    assert own_progressive_sizes("cifar10", _bundle("image", (3, 32, 32))) == []  # not measured
    assert own_progressive_sizes("folder:x", _bundle("image", (1, 28, 28))) == []
    assert own_progressive_sizes("csv:t.csv", _bundle("table", (8,))) == []


def test_the_data_own_late_freeze_is_fashion_mnist_only():
    assert own_late_freeze("fashion-mnist", _bundle("image", (1, 28, 28))) == 0.67
    assert own_late_freeze("cifar10", _bundle("image", (3, 32, 32))) is None  # not measured
    assert own_late_freeze("folder:x", _bundle("image", (1, 28, 28))) is None
    assert own_late_freeze("csv:t.csv", _bundle("table", (8,))) is None


@pytest.mark.parametrize("value, says", [("1.5", "--late-freeze 1.5: must be a fraction of the run in (0, 1)"),
                                         ("soon", "--late-freeze 'soon': must be a fraction")])
def test_a_bad_late_freeze_is_one_line(value, says, tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--late-freeze", value, "--runs-dir", tmp_path)
    assert code == 2 and one_line_error(err).startswith("error: " + says)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "animals")


def test_a_folder_with_the_default_recipe_trains_at_full_size(folder, tmp_path, capsys):
    code, out, _ = cli(capsys, "train", f"--data=folder:{folder}", *FLAGS, "--runs-dir", tmp_path,
                       "--name", "f")
    assert code == 0 and "input sizes" not in out and "late freeze" not in out
    saved = yaml.safe_load((tmp_path / "f" / "config.yaml").read_text())
    assert saved["data"]["progressive_sizes"] == [] and saved["train"]["time_budget"] is None
    assert saved["train"]["late_freeze"] is None  # default: a folder's own is none


@needs_fmnist
def test_fashion_mnist_records_the_sizes_it_trained_at(tmp_path, capsys):
    code, out, _ = cli(capsys, "train", "--model", "resnet20", "--width-mult", "0.25",
                       "--train-size", "512", "--val-size", "256", "--batch-size", "64",
                       "--device", "cpu", "--no-download", "--no-progress", "--epochs", "1",
                       "--test-size", "256", "--runs-dir", tmp_path, "--name", "m")
    assert code == 0 and "20 px -> 24 px -> 28 px" in out
    assert "late freeze" not in out  # no budget cuts these epochs: every layer trains
    saved = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    assert saved["data"]["progressive_sizes"] == [20, 24, 28]
    assert saved["train"]["late_freeze"] is None
    again = run.load_recipe(tmp_path / "m" / "config.yaml")  # reruns the same sizes
    assert again.data.progressive_sizes == [20, 24, 28] and again.train.late_freeze is None


def _fake_calibration(plan, timed, costs: tuple[float, float, float, float]):
    """What calibrate() would measure for ``plan``: 20, 24, 28 px and 28 px frozen cost
    ``costs`` seconds a step; the frozen run first, then (``timed``) every phase."""
    from resnetlab.engine.budget import Calibration
    from resnetlab.engine.plan import phase_samples

    a, b, c, d = costs
    frozen = plan.config.train.late_freeze is not None
    sizes = ((20, a), (24, b)) + (() if frozen and timed is None else ((28, c),))
    cal = Calibration(step_s=0.0, eval_image_s=0.0001, measured_steps=10, calibrate_s=0.0,
                      size_step_s=sizes, frozen_step_s=((28, d),))
    assert timed is None or set(phase_samples(timed)) < set(phase_samples(cal))
    return dataclasses.replace(cal, step_s=(a + b + (d if frozen else c)) / 3)


@needs_fmnist
@pytest.mark.parametrize("costs, frozen, timed, every_epoch", [
    ((0.0005,) * 4, None, [0.67, None], True),  # every epoch fits either way: nothing frozen
    ((0.3, 0.4, 1.4, 0.3), 0.67, [0.67, None], True),  # they fit frozen only
    ((0.8,) * 4, 0.67, [0.67], False),  # not even frozen: unfrozen steps are not timed
])
def test_a_budget_that_cuts_the_epochs_short_freezes_late(tmp_path, capsys, monkeypatch, costs,
                                                          frozen, timed, every_epoch):
    seen = []

    def fake(model, loader, eval_batch, plan, *, timed=None, **kwargs):
        seen.append(plan.config.train.late_freeze)
        return _fake_calibration(plan, timed, costs)

    monkeypatch.setattr("resnetlab.run.budget.calibrate", fake)
    code, out, err = cli(capsys, "train", "--model", "resnet20", "--width-mult", "0.25",
                         "--train-size", "512", "--val-size", "256", "--batch-size", "64",
                         "--device", "cpu", "--no-download", "--no-progress", "--epochs", "6",
                         "--time-budget", "40s", "--test-size", "256", "--runs-dir", tmp_path,
                         "--name", "b")
    assert code == 0, err
    # the run is timed frozen first; every layer training only when the epochs fit frozen
    # (where they do not, unfrozen steps, costlier still, cannot fit them either)
    assert seen == timed
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["train"]
    assert saved["late_freeze"] == frozen
    assert (saved["steps"] == 48) == every_epoch  # 512 images / 64 x 6 epochs
    if frozen:
        assert "stem and first stage frozen from 67% of them" in err
        assert "stem + first stage frozen from 67% of the steps" in out
    else:  # every epoch fits: every layer trains to the end
        assert "all that were asked for" in err and "frozen" not in err + out


def test_the_budget_caps_the_epochs_it_is_given(folder, tmp_path, capsys, monkeypatch):
    from resnetlab.engine.budget import Calibration

    fast = Calibration(step_s=0.001, eval_image_s=0.0001, measured_steps=10, calibrate_s=0.0)
    monkeypatch.setattr("resnetlab.run.budget.calibrate", lambda *a, **k: fast)
    code, out, err = cli(capsys, "train", f"--data=folder:{folder}", *FLAGS, "--time-budget", "1m",
                         "--runs-dir", tmp_path, "--name", "cap")
    assert code == 0 and "all that were asked for" in err
    saved = yaml.safe_load((tmp_path / "cap" / "config.yaml").read_text())["train"]
    assert saved["epochs"] == 2 and saved["time_budget"] == "1m"  # FLAGS' 2 epochs, not more


def test_the_command_budget_counts_from_the_process_start(folder, tmp_path, capsys, monkeypatch):
    # as if `resnetlab train` had started 100 s ago: a 90 s budget is already spent
    import resnetlab.cli

    def started_100_s_ago():
        resnetlab.cli.STARTED = time.perf_counter() - 100

    monkeypatch.setattr(resnetlab.cli, "mark_command_start", started_100_s_ago)
    code, _, err = cli(capsys, "train", f"--data=folder:{folder}", *FLAGS, "--time-budget", "90s",
                       "--runs-dir", tmp_path)
    assert code == 2
    assert one_line_error(err).startswith("error: --time-budget 90s: only 0 training steps fit "
                                          "(starting and reading the data took 100 s of it)")


@needs_fmnist
def test_an_mlp_on_fashion_mnist_trains_at_its_one_size(tmp_path, capsys):
    code, out, _ = cli(capsys, "train", *TINY, "--epochs", "1", "--test-size", "256",
                       "--runs-dir", tmp_path, "--name", "mlp")
    assert code == 0 and "input sizes" not in out
    saved = yaml.safe_load((tmp_path / "mlp" / "config.yaml").read_text())
    assert saved["data"]["progressive_sizes"] == [] and saved["train"]["late_freeze"] is None
