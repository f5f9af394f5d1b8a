"""Items 9 and 10 of issue 22: a ``.th`` file from the published CIFAR ResNet reimplementation
(``linear`` head, DataParallel prefix, no ``num_batches_tracked`` counters: saved before PyTorch
0.4.1) works with eval/predict/export as with convert, and loads strictly with a notice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import resnetlab
from helpers import cli
from resnetlab.transfer import load_pretrained


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    net = resnetlab.create_model("resnet20", shortcut_pad="split").eval()
    return net


def _save_published_th(net, path):
    """The published file's shape: {"epoch", "state_dict" of a DataParallel model, ...}, head
    named ``linear``, and no BatchNorm batch counters."""
    state = {f"module.{k.replace('fc.', 'linear.')}": v for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save({"epoch": 200, "state_dict": state, "best_prec1": 91.7}, path)
    return path


def test_load_pretrained_accepts_missing_batch_counters(tmp_path, reference, capsys):
    path = _save_published_th(reference, tmp_path / "resnet20.th")
    net, args, _ = load_pretrained(path)  # strict by default
    assert args["shortcut_pad"] == "split"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x), reference(x))
    assert "num_batches_tracked" in capsys.readouterr().err


def _images(folder, n=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_predict_and_export_accept_th(tmp_path, reference, capsys):
    path = _save_published_th(reference, tmp_path / "resnet20.th")
    imgs = _images(tmp_path / "imgs")
    code, out, err = cli(capsys, "predict", path, imgs, "--model", "resnet20", "--device", "cpu")
    assert code == 0, err
    assert "0.png" in out
    code, out, err = cli(capsys, "export", path, "--model", "resnet20", "--format",
                         "safetensors", "-o", tmp_path / "out.safetensors")
    assert code == 0, err
    exported = resnetlab.checkpoint.load_checkpoint(tmp_path / "out.safetensors")
    torch.testing.assert_close(exported.model_state["fc.weight"], reference.fc.weight)


def test_eval_accepts_th(tmp_path, reference, capsys):
    path = _save_published_th(reference, tmp_path / "resnet20.th")
    root = tmp_path / "digits"
    root.mkdir()
    for c in range(10):
        _images(root / str(c), 1)
    code, out, err = cli(capsys, "eval", path, "--model", "resnet20", "--data", f"folder:{root}",
                         "--split", "all", "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(out)["num_samples"] == 10
