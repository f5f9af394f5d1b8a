"""Item 4 of issue 22: folder data gets no flip unless asked, in training and in the final test
(the default recipe's flip and flip TTA belong to Fashion-MNIST); config.yaml, results.json,
the recipe and ``--help`` say the same thing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import FMNIST, cli, needs_fmnist
from resnetlab import run

TINY = ["--model", "mlp_resnet", "--width-mult", "0.0625", "--set", "num_blocks=2",
        "--batch-size", "16", "--device", "cpu", "--no-progress", "--max-steps", "2"]


@pytest.fixture
def digits(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp_path / "digits" / str(c)).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(
                tmp_path / "digits" / str(c) / f"{i}.png")
    return tmp_path / "digits"


def _outputs(run_dir):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    return cfg, json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_folder_run_is_not_mirrored_by_default(tmp_path, digits, capsys, command):
    if command == "finetune":  # fine-tune the run the train case makes
        code, _, err = cli(capsys, "train", "--data", f"folder:{digits}", "--runs-dir",
                           tmp_path / "runs", "--name", "src", *TINY)
        assert code == 0, err
        extra = ["--from", tmp_path / "runs" / "src", "--set", "train.max_steps=2",
                 "--device", "cpu", "--no-progress", "--batch-size", "16"]
    else:
        extra = TINY
    code, _, err = cli(capsys, command, "--data", f"folder:{digits}", "--runs-dir",
                       tmp_path / "runs", "--name", "r", *extra)
    assert code == 0, err
    cfg, results = _outputs(tmp_path / "runs" / "r")
    assert cfg["data"]["augment"] == "none" and cfg["train"]["tta"] is False
    assert results["tta"] is False


def test_folder_flip_when_asked(tmp_path, digits, capsys):
    code, _, err = cli(capsys, "train", "--data", f"folder:{digits}", "--runs-dir",
                       tmp_path / "runs", "--name", "r", "--augment", "flip", *TINY)
    assert code == 0, err
    cfg, results = _outputs(tmp_path / "runs" / "r")
    assert cfg["data"]["augment"] == "flip" and results["tta"] is True


@needs_fmnist
def test_main_job_keeps_flip_and_tta():
    cfg = run.load_recipe("default")
    assert cfg.data.augment == "default" and cfg.train.tta is True
    from resnetlab.data.datasets import DATASETS

    assert DATASETS["fashion-mnist"].augment == "flip" and "flip" not in DATASETS["mnist"].augment
    assert FMNIST.is_dir()


def test_help_says_the_rule(capsys):
    code, out, _ = cli(capsys, "train", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert "folders: none" in text and "never for a folder without --augment flip" in text
