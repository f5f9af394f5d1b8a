"""Fine-tuning (issue 11): policies in resnetlab.transfer.finetune and the run built on them.

The run-level tests pretrain a ResNet-20 on a tiny 3-class image folder and fine-tune it on a
2-class folder: frozen parameters must stay bit-identical, frozen BN must keep its running
statistics, the head is replaced with a notice, and the class map is checked at eval time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from helpers import cli, one_line_error
from resnetlab import run
from resnetlab.checkpoint import load_checkpoint
from resnetlab.engine.config import OptimConfig
from resnetlab.engine.optim import build_optimizer
from resnetlab.models import create_model
from resnetlab.transfer import finetune as ft
from resnetlab.utils.errors import ConfigError


def write_folder(root: Path, classes, per_class: int = 10, seed: int = 0) -> Path:
    """Grey 8x8 images whose brightness depends on the class."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            level = 40 + 70 * k
            pixels = np.clip(rng.normal(level, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def tiny(data: Path, runs: Path, name: str, epochs: int = 2) -> run.RunConfig:
    cfg = run.load_recipe("default")
    cfg.model.name = "resnet20"
    cfg.data.name, cfg.data.batch_size, cfg.data.val_size = f"folder:{data}", 8, 4
    cfg.train.epochs, cfg.train.device, cfg.train.precision = epochs, "cpu", "fp32"
    cfg.train.deterministic, cfg.train.tta, cfg.train.seed = True, False, 1
    cfg.runs_dir, cfg.name = str(runs), name
    return cfg


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> run.Run:
    root = tmp_path_factory.mktemp("ft")
    data = write_folder(root / "source", ("ant", "bee", "cat"))
    return run.train(tiny(data, root / "runs", "source"), progress=False)


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("target") / "pets", ("dog", "eel"), seed=1)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path, train_state=False).model_state


# ---- policies on a bare model -------------------------------------------------------------

def test_freeze_specs_count_stages_from_the_input():
    model = create_model("resnet20", num_classes=3)
    assert ft.frozen_stage_names(model, "none") == []
    assert ft.frozen_stage_names(model, "stem") == ["stem"]
    assert ft.frozen_stage_names(model, "stages:2") == ["stem", "layer1", "layer2"]
    assert ft.frozen_stage_names(model, "backbone") == ["stem", "layer1", "layer2", "layer3"]
    frozen = ft.freeze(model, "stages:1")
    assert "conv1.weight" in frozen and "layer1.0.conv1.weight" in frozen
    assert not any(n.startswith(("layer2", "fc")) for n in frozen)
    for bad in ("stages:9", "layers", "stages:x"):
        with pytest.raises(ConfigError, match="--freeze"):
            ft.frozen_stage_names(model, bad)


def test_lr_scales_give_groups_and_keep_frozen_params_for_later():
    model = create_model("resnet20", num_classes=3)
    ft.freeze(model, "backbone")
    opt = build_optimizer(model, OptimConfig(lr=0.1), lr_scales=ft.lr_scales(model, 0.1))
    scales = {g["lr_scale"] for g in opt.param_groups}
    assert scales == {1.0, 0.1}
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters()}  # frozen ones too: unfreezing later
    head = {id(p) for p in model.fc.parameters()}
    for g in opt.param_groups:
        assert all((id(p) in head) == (g["lr_scale"] == 1.0) for p in g["params"])


def test_frozen_bn_stays_in_eval_mode_through_train():
    model = create_model("resnet20", num_classes=3)
    ft.freeze_bn(model)
    before = model.bn1.running_mean.clone()
    model.train()
    model(torch.randn(4, 3, 16, 16))
    assert torch.equal(model.bn1.running_mean, before)
    assert not model.bn1.weight.requires_grad


def test_reestimate_bn_matches_the_data_statistics():
    bn = nn.Sequential(nn.BatchNorm2d(2))
    x = torch.randn(64, 2, 4, 4) * 3 + 5
    used = ft.reestimate_bn(bn, [(x[:32], None), (x[32:], None)])
    assert used == 2
    torch.testing.assert_close(bn[0].running_mean, x.mean(dim=(0, 2, 3)), atol=1e-4, rtol=0)
    assert bn[0].momentum == 0.1  # restored


@pytest.mark.parametrize("have,want", [(3, 1), (1, 3)])
def test_first_conv_adaptation_keeps_the_response(have, want):
    w = torch.randn(8, have, 3, 3)
    gray = torch.rand(2, 1, 6, 6)
    new = ft.adapt_first_weight(w, want)
    assert new.shape == (8, want, 3, 3)
    # the same picture in either form gives the same response
    src_in, dst_in = gray.expand(-1, have, -1, -1), gray.expand(-1, want, -1, -1)
    torch.testing.assert_close(F.conv2d(dst_in, new), F.conv2d(src_in, w), atol=1e-5, rtol=1e-5)


def test_transplant_replaces_head_and_adapts_input_with_notices():
    src = create_model("resnet20", num_classes=3, in_chans=3)
    dst = create_model("resnet20", num_classes=2, in_chans=1)
    notes = ft.transplant(dst, src.state_dict(), source_classes=["a", "b", "c"],
                          classes=["x", "y"])
    assert any("head" in n and "a, b, c" in n and "x, y" in n for n in notes)
    assert any("3 to 1 input channels" in n for n in notes)
    assert torch.equal(dst.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
    other = create_model("resnet32", num_classes=2, in_chans=1)
    with pytest.raises(ConfigError, match="pretrained"):
        ft.transplant(other, src.state_dict(), source_classes=["a"], classes=["x", "y"])


# ---- whole fine-tune runs -----------------------------------------------------------------

def test_frozen_params_and_bn_stats_are_bit_identical(pretrained, target, tmp_path, capsys):
    cfg = tiny(target, tmp_path, "ft")
    cfg.finetune.freeze, cfg.finetune.bn = "stages:1", "frozen"
    tuned = run.finetune(cfg, pretrained.run_dir, progress=False)
    err = capsys.readouterr().err
    assert "replacing the head: 3 classes (ant, bee, cat) -> 2 classes (dog, eel)" in err
    before, after = _weights(pretrained.best), _weights(tuned.last)
    frozen = [k for k in before if k.startswith(("conv1.", "bn1.", "layer1."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    stats = [k for k in before if "running_" in k]  # every BN, frozen or not
    assert all(torch.equal(before[k], after[k]) for k in stats)
    assert not torch.equal(before["layer2.0.conv1.weight"], after["layer2.0.conv1.weight"])
    assert after["fc.weight"].shape[0] == 2
    saved = run.RunConfig.from_yaml(tuned.run_dir / "config.yaml")
    assert saved.finetune.source_classes == ["ant", "bee", "cat"]
    assert tuned.results["top1"] is not None
    with pytest.raises(ConfigError, match="does not know"):  # the class map is checked
        run.evaluate(tuned, data=pretrained.config.data.name, split="all")


@pytest.mark.parametrize("epochs", [1, 2])
def test_unfreeze_at_trains_the_backbone_afterwards(pretrained, target, tmp_path, epochs):
    cfg = tiny(target, tmp_path, "gradual", epochs=epochs)
    cfg.finetune.freeze, cfg.finetune.unfreeze_at = "backbone", 1
    cfg.finetune.backbone_lr_scale = 0.5
    tuned = run.finetune(cfg, pretrained.run_dir, progress=False)
    before, after = _weights(pretrained.best), _weights(tuned.last)
    key = "layer1.0.conv1.weight"
    # frozen for the first epoch, trained in the second
    assert torch.equal(before[key], after[key]) == (epochs == 1)
    assert not torch.equal(before["fc.bias"][:2], after["fc.bias"])


def test_cli_finetune_bad_input(pretrained, target, tmp_path, capsys):
    code, _, err = cli(capsys, "finetune", "--data", f"folder:{target}", "--runs-dir", tmp_path)
    assert code == 2 and "--from" in one_line_error(err)
    code, _, err = cli(capsys, "finetune", "--from", pretrained.run_dir, "--freeze", "half",
                       "--data", f"folder:{target}", "--runs-dir", tmp_path)
    assert code == 2 and "--freeze 'half'" in one_line_error(err)
    code, _, err = cli(capsys, "finetune", "--from", pretrained.run_dir, "--bn", "sideways",
                       "--data", f"folder:{target}", "--runs-dir", tmp_path)
    assert code == 2 and "--bn 'sideways': choose train or frozen" in one_line_error(err)
    code, _, err = cli(capsys, "finetune", "--from", tmp_path / "nope", "--data",
                       f"folder:{target}", "--runs-dir", tmp_path)
    assert code == 2 and "no such run" in one_line_error(err)
    assert not any((tmp_path).glob("*/config.yaml"))  # nothing left behind


def test_a_resumed_finetune_keeps_its_policies(pretrained, target, tmp_path):
    cfg = tiny(target, tmp_path, "resumed", epochs=1)
    cfg.finetune.freeze, cfg.finetune.bn = "stem", "frozen"
    first = run.finetune(cfg, pretrained.run_dir, progress=False)
    (first.run_dir / "results.json").unlink()  # as if stopped after epoch 1 of 2
    again = run.resume(first.run_dir, {"train.epochs": 2}, progress=False)
    assert [r["epoch"] for r in again.fit.history] == [1, 2]
    before, after = _weights(pretrained.best), _weights(again.last)
    for key in ("conv1.weight", "bn1.weight", "layer3.2.bn2.running_mean"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["layer1.0.conv1.weight"], after["layer1.0.conv1.weight"])
