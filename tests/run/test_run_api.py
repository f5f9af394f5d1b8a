"""The run API (resnetlab.run) and the CLI on top of it, on tiny image folders and tables.

Covers the two silent-wrong-result bugs of issue 8 (evaluation labels compared by class name;
non-finite hyper-parameters refused before a run directory exists), the API/CLI identity of a
run, the shipped recipes, and the run-level behaviour of `resnetlab train` and `eval`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import safetensors.torch

from helpers import CLASSES, FLAGS, cli, one_line_error, tiny_config, write_folder
from resnetlab import run
from resnetlab.utils.errors import ConfigError


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "animals")


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory) -> run.Run:
    runs = tmp_path_factory.mktemp("runs")
    return run.train(tiny_config(folder, runs, "api"), progress=False)


def test_python_api_and_cli_give_the_same_run(trained, folder, capsys):
    runs = trained.run_dir.parent
    code, _, err = cli(capsys, "train", *FLAGS, "--data", f"folder:{folder}", "--runs-dir", runs,
                       "--name", "cli")
    assert code == 0, err
    api, by_cli = trained.run_dir, runs / "cli"
    strip = lambda text: text.replace("name: api", "name: cli")  # noqa: E731
    assert strip((api / "config.yaml").read_text()) == (by_cli / "config.yaml").read_text()
    for kind in ("best", "last"):
        a = safetensors.torch.load_file(api / "checkpoints" / kind / "model.safetensors")
        b = safetensors.torch.load_file(by_cli / "checkpoints" / kind / "model.safetensors")
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), kind


def test_run_results_record_what_ran(trained):
    results = json.loads((trained.run_dir / "results.json").read_text())
    env = results["environment"]
    assert env["device"] == "cpu" and env["dtype"] == "float32" and env["torch"] and env["cpu"]
    split = results["data_split"]
    assert split["num_train"] + split["num_val"] == 36 and split["num_val"] >= 1
    assert results["classes"] == list(CLASSES) and results["top5"] is not None
    assert trained.best is not None and trained.last is not None
    assert run.Run.open(trained.run_dir).results == results


def test_eval_maps_labels_by_class_name(trained, tmp_path, capsys):
    """A folder that holds only some of the run's classes, in another alphabetical position,
    is scored against the right rows (before the fix bee/cat were scored as ant/bee)."""
    other = write_folder(tmp_path / "few", classes=("bee", "cat"), per_class=5, seed=1)
    code, out, err = cli(capsys, "eval", trained.run_dir, "--data", f"folder:{other}",
                         "--split", "all", "--json", "--per-class")
    assert code == 0, err
    report = json.loads(out)
    assert report["classes"] == list(CLASSES) and report["num_samples"] == 10
    rows = [sum(r) for r in report["confusion"]]
    assert rows == [0, 5, 5]
    assert report["per_class"]["ant"] is None and set(report["per_class"]) == set(CLASSES)
    assert report["top5"] is None  # 3 classes: top-5 says nothing


def test_eval_refuses_or_drops_unknown_classes(trained, tmp_path, capsys):
    other = write_folder(tmp_path / "zoo", classes=("cat", "zebra"), per_class=4, seed=2)
    code, _, err = cli(capsys, "eval", trained.run_dir, "--data", f"folder:{other}",
                       "--split", "all")
    assert code == 2
    line = one_line_error(err)
    assert "zebra" in line and "--ignore-unknown-classes" in line
    code, out, err = cli(capsys, "eval", trained.run_dir, "--data", f"folder:{other}",
                         "--split", "all", "--ignore-unknown-classes", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["dropped_unknown"] == 4 and report["unknown_classes"] == ["zebra"]
    assert report["num_samples"] == 4 and [sum(r) for r in report["confusion"]] == [0, 0, 4]


def test_eval_split_all_scores_every_row(trained, folder, capsys):
    code, out, err = cli(capsys, "eval", trained.run_dir, "--split", "all", "--json")
    assert code == 0, err
    assert json.loads(out)["num_samples"] == 36
    code, _, err = cli(capsys, "eval", trained.run_dir, "--split", "test")
    assert code == 2 and "--split all" in one_line_error(err)


@pytest.mark.parametrize("flag, value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--weight-decay", "nan"),
    ("--momentum", "1.5"), ("--epochs", "0"), ("--val-size", "1.5"),
])
def test_bad_hyper_parameters_stop_before_a_run_directory(folder, tmp_path, capsys, flag, value):
    code, _, err = cli(capsys, "train", *FLAGS, "--data", f"folder:{folder}", "--runs-dir",
                       tmp_path, "--name", "bad", flag, value)
    assert code == 2
    assert one_line_error(err).startswith(f"error: {flag} {value}") or flag in err
    assert not (tmp_path / "bad").exists()


def test_python_configs_are_checked_too(folder, tmp_path):
    cfg = tiny_config(folder, tmp_path, "nan")
    cfg.optim.lr = float("nan")
    with pytest.raises(ConfigError, match="optim.lr"):
        run.train(cfg)
    assert not (tmp_path / "nan").exists()


def test_a_flag_error_found_late_leaves_no_directory_and_retry_works(folder, tmp_path, capsys):
    # --early-stop without validation is only known once the data is read
    bad = ["--val-size", "0", "--early-stop", "2"]
    code, _, err = cli(capsys, "train", *FLAGS, "--data", f"folder:{folder}", "--runs-dir",
                       tmp_path, "--name", "retry", *bad)
    assert code == 2 and "--early-stop" in one_line_error(err)
    assert not (tmp_path / "retry").exists()
    code, _, err = cli(capsys, "train", *FLAGS, "--data", f"folder:{folder}", "--runs-dir",
                       tmp_path, "--name", "retry", "--max-steps", "2")
    assert code == 0, err


def test_resume_of_a_finished_run_changes_nothing(trained, capsys):
    before = {p: p.read_bytes() for p in trained.run_dir.rglob("*") if p.is_file()}
    code, out, _ = cli(capsys, "train", "--resume", trained.run_dir, "--epochs", "5")
    assert code == 0 and "is finished" in out
    assert {p: p.read_bytes() for p in trained.run_dir.rglob("*") if p.is_file()} == before


def test_ctrl_c_names_the_resume_command(folder, tmp_path, capsys, monkeypatch):
    from resnetlab.run import experiment

    real_fit = experiment.fit

    def fit_then_interrupt(*args, **kwargs):
        real_fit(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "fit", fit_then_interrupt)
    code, _, err = cli(capsys, "train", *FLAGS, "--data", f"folder:{folder}", "--runs-dir",
                       tmp_path, "--name", "stopped", "--max-steps", "2")
    assert code == 130
    assert f"resume with: resnetlab train --resume {tmp_path / 'stopped'}" in err.replace("\n", "")
    monkeypatch.setattr(experiment, "fit", real_fit)
    code, _, err = cli(capsys, "train", "--resume", tmp_path / "stopped")
    assert code == 0, err
    assert (tmp_path / "stopped" / "results.json").is_file()


def test_set_reaches_any_config_key_and_model_arguments(folder, tmp_path, capsys):
    code, out, err = cli(capsys, "train", *FLAGS, "--data", f"folder:{folder}", "--runs-dir",
                         tmp_path, "--name", "set", "--max-steps", "1", "--set", "optim.eps=1e-6",
                         "--set", "schedule.warmup_start_frac=0.2", "--max-nonfinite-steps", "3",
                         "--width-mult", "0.125")
    assert code == 0, err
    cfg = run.Run.open(tmp_path / "set").config
    assert cfg.optim.eps == 1e-6 and cfg.schedule.warmup_start_frac == 0.2
    assert cfg.train.max_nonfinite_steps == 3 and cfg.model.kwargs["num_blocks"] == 1
    assert "mlp_resnet (width x0.125)" in out
    # 3 classes: no top-5 in the summary; the final evaluation is on validation: one val row
    assert "top-5" not in out and out.count("val top-1") == 1


def test_tables_report_rows_per_second(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{'xy'[i % 2]}\n" for i in range(40)))
    # the default recipe's image augmentation (flip) does not apply to a table
    code, out, err = cli(capsys, "train", *FLAGS, "--data", f"csv:{table}", "--target", "label",
                         "--runs-dir", tmp_path, "--max-steps", "2")
    assert code == 0, err
    assert "rows/s" in out and "images/s" not in out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert json.loads((run_dir / "results.json").read_text())["data_split"]["num_val"] == 4


def test_recipes_ship_inside_the_package():
    shipped = resources.files("resnetlab") / "recipes"
    assert {"default", "long"} <= set(run.recipe_names())
    assert (shipped / "default.yaml").is_file()
    assert run.load_recipe("long").model.name == "resnet32"
    assert run.load_recipe("default").data.val_size is None  # the data's own split
    with pytest.raises(ConfigError, match="no recipe of that name"):
        run.load_recipe("nope")


def test_every_option_is_a_flag_of_its_command_or_a_set_key():
    """Every declared flag is an option of `resnetlab train` (or `finetune`, for its own), and
    every config key without a flag is reachable with --set section.key=value."""
    import inspect

    import yaml

    from resnetlab.cli import finetune, train
    from resnetlab.cli.options import flag_overrides
    from resnetlab.engine.config import OPTIONS, apply_overrides

    commands = {None: train.command, "finetune": finetune.command}
    for option in OPTIONS.values():
        if option.flag:
            assert option.param in inspect.signature(commands[option.only]).parameters, option.flag
    cfg = run.RunConfig()
    for section in ("data", "optim", "schedule", "train", "finetune"):
        for key, value in vars(getattr(cfg, section)).items():
            dotted = f"{section}.{key}"
            if dotted in OPTIONS and OPTIONS[dotted].flag:
                continue
            text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value,
                                  default_flow_style=True).strip().removesuffix("...").strip()
            overrides = flag_overrides({}, [f"{dotted}={text}"])
            assert overrides == {dotted: text}
            assert apply_overrides(cfg, overrides).to_dict() == cfg.to_dict(), dotted

