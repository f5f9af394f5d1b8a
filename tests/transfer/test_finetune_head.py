"""Item 5 of issue 22: a fine-tune keeps the pretrained head only when the classes match by
name *and* the source's names are real (not made-up indices "0".."9"); it says which happened;
``--keep-head`` forces it; a ``--model`` other than the source run's own is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import resnetlab
from helpers import cli, one_line_error
from resnetlab.checkpoint import save_checkpoint
from resnetlab.run.pretrained import read_source
from resnetlab.transfer.finetune import head_decision, transplant

DIGITS = [str(i) for i in range(10)]


def test_unnamed_indices_never_keep_the_head():
    keep, why = head_decision(DIGITS, DIGITS, named=False)
    assert not keep and "unnamed" in why and "--keep-head" in why
    keep, why = head_decision(DIGITS, DIGITS, named=True)  # "0".."9" are indices, named or not
    assert not keep
    keep, why = head_decision(["cat", "dog"], ["cat", "dog"], named=True)
    assert keep and "keeping the pretrained head" in why
    keep, why = head_decision(DIGITS, DIGITS, named=False, force=True)
    assert keep and "--keep-head" in why


def test_transplant_replaces_an_unnamed_head():
    torch.manual_seed(0)
    src, new = resnetlab.create_model("resnet20"), resnetlab.create_model("resnet20")
    before = new.fc.weight.clone()
    notices = transplant(new, src.state_dict(), source_classes=DIGITS, classes=DIGITS,
                         named=False)
    assert torch.equal(new.fc.weight, before) and "replacing the head" in notices[0]
    notices = transplant(new, src.state_dict(), source_classes=DIGITS, classes=DIGITS,
                         named=False, keep_head=True)
    assert torch.equal(new.fc.weight, src.fc.weight)


def test_a_bare_th_file_has_no_names(tmp_path):
    net = resnetlab.create_model("resnet20", shortcut_pad="split")
    state = {f"module.{k.replace('fc.', 'linear.')}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "resnet20.th")
    src = read_source(str(tmp_path / "resnet20.th"))
    assert src.classes == DIGITS and not src.named


def _run_dir(tmp_path, name="resnet20"):
    net = resnetlab.create_model(name, num_classes=10, in_chans=1)
    save_checkpoint(tmp_path / "src" / "checkpoints" / "best", model_state=net.state_dict(),
                    meta={"model": {"name": name, "num_classes": 10, "in_chans": 1},
                          "classes": DIGITS})
    return tmp_path / "src"


def test_finetune_refuses_another_model_than_the_runs(tmp_path, capsys):
    source = _run_dir(tmp_path)
    folder = tmp_path / "digits"
    for c in DIGITS:
        (folder / c).mkdir(parents=True)
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / c / "a.png")
    code, _, err = cli(capsys, "finetune", "--from", source, "--model", "resnet56", "--data",
                       f"folder:{folder}", "--runs-dir", tmp_path / "runs", "--device", "cpu")
    line = one_line_error(err)
    assert code == 2 and "--model resnet56" in line and "resnet20" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("flag", [[], ["--keep-head"]])
def test_finetune_says_what_it_loaded_and_which_head(tmp_path, capsys, flag):
    source = _run_dir(tmp_path)
    folder = tmp_path / "digits"
    rng = np.random.default_rng(0)
    for c in DIGITS:
        (folder / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / c / f"{i}.png")
    code, _, err = cli(capsys, "finetune", "--from", source, "--data", f"folder:{folder}",
                       "--runs-dir", tmp_path / "runs", "--device", "cpu", "--epochs", "1",
                       "--val-size", "10", "--no-progress", "--set", "train.max_steps=1",
                       "--set", "train.tta=false", *flag)
    assert code == 0, err
    assert "loading resnet20 weights" in err
    assert ("keeping the pretrained head (--keep-head)" if flag else "replacing the head") in err
