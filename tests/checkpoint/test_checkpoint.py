"""Checkpoint format: round-trips, atomic saves, foreign weight files, refusal of pickles."""

from __future__ import annotations

import errno
import os
import pickle

import pytest
import safetensors.torch
import torch
from torch import nn

from helpers import Exploit
from resnetlab import checkpoint
from resnetlab.checkpoint import load_checkpoint, save_checkpoint
from resnetlab.engine import OptimConfig, build_optimizer
from resnetlab.engine.state import rng_state, set_rng_state
from resnetlab.utils.errors import DataError


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3))


def trained(name: str = "sgd"):
    model = net()
    opt = build_optimizer(model, OptimConfig(name=name, lr=0.01))
    for _ in range(3):
        model(torch.randn(5, 1, 6, 6)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_round_trip_with_optimizer_and_rng_state(tmp_path, name):
    model, opt = trained(name)
    state = {"optimizer": opt.state_dict(), "rng": rng_state(), "epoch": 3, "pair": (1, 2.5)}
    save_checkpoint(tmp_path / "ck", model_state=model.state_dict(), train_state=state,
                    meta={"classes": ["a", "b", "c"], "model": {"name": "net"}})
    expected_draw = torch.rand(3)
    ck = load_checkpoint(tmp_path / "ck")
    same_state(ck.model_state, model.state_dict())
    assert ck.meta["classes"] == ["a", "b", "c"] and ck.meta["format_version"] == 1
    assert ck.train_state["epoch"] == 3 and ck.train_state["pair"] == (1, 2.5)
    model2, opt2 = net(1), None
    ck.load_into(model2)
    opt2 = build_optimizer(model2, OptimConfig(name=name, lr=0.01))
    opt2.load_state_dict(ck.train_state["optimizer"])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    for p, p2 in zip(model.parameters(), model2.parameters(), strict=True):
        for key, value in opt.state[p].items():
            assert torch.equal(value, opt2.state[p2][key]), key
    set_rng_state(ck.train_state["rng"])
    assert torch.equal(torch.rand(3), expected_draw)
    x = torch.randn(5, 1, 6, 6)
    for m, o in ((model, opt), (model2, opt2)):  # one more step is identical too
        m(x).square().mean().backward()
        o.step()
    same_state(model.state_dict(), model2.state_dict())


def test_weights_are_plain_safetensors_with_meta_in_header(tmp_path):
    model, _ = trained()
    save_checkpoint(tmp_path / "ck", model_state=model.state_dict(), meta={"classes": ["x"]})
    weights = tmp_path / "ck" / "model.safetensors"
    fresh = net(5)
    fresh.load_state_dict(safetensors.torch.load_file(weights))  # no resnetlab needed
    same_state(fresh.state_dict(), model.state_dict())
    lone = tmp_path / "copied.safetensors"
    lone.write_bytes(weights.read_bytes())
    assert load_checkpoint(lone).meta["classes"] == ["x"]  # meta travels in the header
    assert load_checkpoint(tmp_path / "ck").train_state is None
    assert oct(weights.stat().st_mode & 0o777) == "0o644"


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    v1, _ = trained()
    ck = tmp_path / "run" / "checkpoints" / "last"
    save_checkpoint(ck, model_state=v1.state_dict(), train_state={"step": 1}, meta={"step": 1})

    def dies_mid_write(path, data):
        path.write_bytes(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_file", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(ck, model_state=net(3).state_dict(), train_state={"step": 2}, meta={"step": 2})
    monkeypatch.undo()
    back = load_checkpoint(tmp_path / "run")
    assert back.meta["step"] == 1 and back.train_state == {"step": 1}
    same_state(back.model_state, v1.state_dict())
    assert sorted(os.listdir(ck.parent)) == ["last"]  # the temp dir was removed


def test_crash_between_renames_falls_back_to_old(tmp_path, monkeypatch):
    v1, _ = trained()
    ck = tmp_path / "checkpoints" / "last"
    save_checkpoint(ck, model_state=v1.state_dict(), meta={"step": 1})
    real_replace, calls = os.replace, []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between renames")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ck, model_state=net(3).state_dict(), meta={"step": 2})
    monkeypatch.undo()
    assert not ck.exists()
    for path in (tmp_path, ck):
        assert load_checkpoint(path).meta["step"] == 1
    save_checkpoint(ck, model_state=v1.state_dict(), meta={"step": 3})
    assert sorted(os.listdir(ck.parent)) == ["last"]
    assert load_checkpoint(ck).meta["step"] == 3


def test_stale_temp_dir_from_a_kill_is_cleaned(tmp_path):
    stale = tmp_path / ".last.tmp-99999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    save_checkpoint(tmp_path / "last", model_state=net().state_dict(), meta={})
    assert not stale.exists()


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
    lambda sd: {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},
    lambda sd: {"ema": {f"module._orig_mod.{k}": v for k, v in sd.items()}, "note": "x"},
])
def test_torch_files_load_weights_only(tmp_path, wrap):
    model, _ = trained()
    path = tmp_path / "w.pth"
    torch.save(wrap(model.state_dict()), path)
    ck = load_checkpoint(path)
    same_state(ck.model_state, model.state_dict())
    assert ck.train_state is None and ck.meta == {}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Exploit(marker)}, f)
    torch.save({"w": torch.zeros(1), "x": Exploit(marker)}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(DataError, match="refused or unreadable") as info:
            load_checkpoint(p)
        assert "\n" not in str(info.value) and str(p) in str(info.value)
    assert not marker.exists()


def test_mismatch_and_missing_are_one_line_errors(tmp_path):
    save_checkpoint(tmp_path / "ck", model_state=net().state_dict(), meta={})
    other = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 7))
    with pytest.raises(DataError, match=r"shape 3\.weight \(3, 64\) vs \(7, 64\)") as info:
        load_checkpoint(tmp_path / "ck").load_into(other)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="missing 4.weight"):
        load_checkpoint(tmp_path / "ck").load_into(nn.Sequential(*net(), nn.Linear(3, 3)))
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(DataError, match="no checkpoint here"):
        load_checkpoint(tmp_path)
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(DataError, match="unknown checkpoint type"):
        load_checkpoint(tmp_path / "w.npz")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "bad.safetensors")
