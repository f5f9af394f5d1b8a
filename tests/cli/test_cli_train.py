"""The training CLI end to end on a small real subset: train -> run directory -> eval -> predict,
the --config round trip, and the one-line errors a user can cause."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import FMNIST, TINY, cli, needs_fmnist, one_line_error
from resnetlab.cli.app import main


def steps_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "steps.csv", newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the tests below (8 steps, 1 step per log row)."""
    runs = tmp_path_factory.mktemp("runs")
    try:
        main(["train", *TINY, "--max-steps", "8", "--log-every", "1", "--runs-dir", str(runs),
              "--name", "tiny"])
    except SystemExit as stop:
        assert not stop.code, f"training failed with exit status {stop.code}"
    return runs / "tiny"


@needs_fmnist
def test_train_writes_a_complete_run_directory(trained):
    for name in ("config.yaml", "metrics.csv", "steps.csv", "curves.png", "confusion.png",
                 "results.json", "checkpoints/last/model.safetensors",
                 "checkpoints/best/model.safetensors"):
        assert (trained / name).is_file() and (trained / name).stat().st_size > 0, name
    results = json.loads((trained / "results.json").read_text())
    assert results["split"] == "test" and results["num_samples"] == 10_000
    assert results["tta"] is True  # the default recipe evaluates with flip TTA
    assert Path(results["checkpoint"]).name == "best"
    assert results["steps"] == 8 and len(steps_losses(trained)) == 8
    assert 0.0 <= results["top1"] <= results["top5"] <= 1.0
    assert len(results["confusion"]) == 10 and sum(map(sum, results["confusion"])) == 10_000


@needs_fmnist
def test_summary_table_and_run_dir_are_printed(tmp_path, capsys):
    code, out, _ = cli(capsys, "train", *TINY, "--max-steps", "2", "--runs-dir", tmp_path,
                       "--name", "printed", "--no-tta", "--test-on", "last")
    assert code == 0
    assert "summary" in out and "test top-1 / top-5" in out and "images/s" in out
    assert f"run directory: {tmp_path / 'printed'}" in out.replace("\n", "")
    assert "last (epoch" in out


@needs_fmnist
def test_eval_reproduces_the_final_test_numbers(trained, capsys):
    code, out, _ = cli(capsys, "eval", trained, "--tta", "--json")
    assert code == 0
    report = json.loads(out)
    results = json.loads((trained / "results.json").read_text())
    assert report["split"] == "test" and report["num_samples"] == 10_000
    assert report["top1"] == pytest.approx(results["top1"], abs=1e-9)
    assert report["confusion"] == results["confusion"]


@needs_fmnist
def test_predict_on_the_run_directory(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    raw = gzip.open(FMNIST / "t10k-images-idx3-ubyte.gz").read()[16:16 + 3 * 784]
    for i in range(3):
        pixels = np.frombuffer(raw[i * 784:(i + 1) * 784], np.uint8).reshape(28, 28)
        Image.fromarray(pixels).save(tmp_path / f"item{i}.png")
    code, out, _ = cli(capsys, "predict", trained, tmp_path, "--json", "-k", "3")
    assert code == 0
    rows = json.loads(out)
    assert [Path(r["input"]).name for r in rows] == ["item0.png", "item1.png", "item2.png"]
    for row in rows:
        probs = [t["prob"] for t in row["topk"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    code, out, _ = cli(capsys, "predict", trained, tmp_path / "item0.png", "--csv", "-k", "10")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0] == "input,rank,class,index,prob" and len(lines) == 11
    assert sum(float(line.split(",")[-1]) for line in lines[1:]) == pytest.approx(1.0, abs=1e-4)
    code, out, _ = cli(capsys, "predict", trained, "item1.png")
    assert code == 0 and "item1.png" in out and "%" in out


@needs_fmnist
def test_saved_config_reproduces_the_first_five_losses(trained, tmp_path, capsys):
    before = set(trained.parent.iterdir())
    code, _, err = cli(capsys, "train", "--config", trained / "config.yaml", "--max-steps", "5",
                       "--no-progress")
    assert code == 0, err
    assert "exists; this run gets a new name" in err  # the saved name (tiny) is taken
    (again,) = set(trained.parent.iterdir()) - before
    assert steps_losses(again) == pytest.approx(steps_losses(trained)[:5], rel=1e-5)


@needs_fmnist
def test_a_run_directory_is_never_overwritten(trained, capsys):
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    code, _, err = cli(capsys, "train", *TINY, "--max-steps", "1", "--runs-dir", trained.parent,
                       "--name", "tiny")
    assert code == 2
    assert "already exists" in one_line_error(err) and "--resume" in err
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before


def test_resuming_with_a_different_model_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: resnet20\n")
    code, _, err = cli(capsys, "train", "--resume", run, "--model", "resnet32")
    assert code == 2
    line = one_line_error(err)
    assert "resnet20" in line and "--model 'resnet32'" in line and str(run) in line
    code, _, err = cli(capsys, "train", "--resume", tmp_path / "nowhere")
    assert code == 2 and "no config.yaml" in one_line_error(err)
    code, _, err = cli(capsys, "train", "--resume", run, "--config", "default")
    assert code == 2 and "drop --config" in one_line_error(err)


@pytest.mark.parametrize("argv, fragment", [
    (["--data", "no-such-set"], "no-such-set"),
    (["--config", "no-such-recipe"], "no recipe of that name"),
    (["--set", "width_mult"], "expected KEY=VALUE"),
    (["--model", "resnet21"], "resnet21"),
    (["--milestones", "3,x"], "--milestones"),
    (["--test-on", "first"], "--test-on"),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, fragment):
    code, _, err = cli(capsys, "train", *argv, "--runs-dir", tmp_path, "--no-download",
                       "--data-dir", tmp_path, "--max-steps", "1")
    assert code == 2
    assert fragment in one_line_error(err)
    assert not any(tmp_path.glob("*/config.yaml"))  # no run directory was started


def test_image_model_on_a_table_is_one_line(tmp_path, capsys):
    table = tmp_path / "t.csv"
    rows = ["a,b,label"] + [f"{i},{i % 3},{'xy'[i % 2]}" for i in range(40)]
    table.write_text("\n".join(rows) + "\n")
    code, _, err = cli(capsys, "train", "--data", f"csv:{table}", "--target", "label",
                       "--augment", "none", "--val-size", "8", "--runs-dir", tmp_path,
                       "--max-steps", "1")
    assert code == 2
    assert "reads images" in one_line_error(err) and "mlp_resnet" in err


def test_train_help_lists_every_config_choice(capsys):
    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0
    for flag in ("--model", "--data", "--data-dir", "--epochs", "--batch-size", "--lr",
                 "--momentum", "--nesterov", "--weight-decay", "--optimizer", "--schedule",
                 "--warmup-epochs", "--label-smoothing", "--ema", "--clip-grad", "--early-stop",
                 "--precision", "--channels-last", "--compile", "--deterministic", "--device",
                 "--seed", "--train-size", "--val-size", "--augment", "--target", "--name",
                 "--runs-dir", "--resume", "--tta", "--drop-rate", "--drop-path", "--width-mult",
                 "--zero-init-last", "--shortcut", "--max-steps", "--set", "--config"):
        assert flag in out, flag
