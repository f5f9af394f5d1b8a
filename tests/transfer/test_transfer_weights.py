"""Weight import: the files users already have load safely and reproduce their source's outputs."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import resnetlab
from helpers import Exploit
from resnetlab.transfer import (
    convert_weights,
    detect_layout,
    load_pretrained,
    load_weights,
    read_weights,
)
from resnetlab.utils.errors import ConfigError, DataError

# -- a reference CIFAR ResNet-20 in the style of the widely used reimplementation ----------------
# Module names conv1/bn1/layer1..3/linear, option A through a parameter-free lambda module that
# pads C/4 zero channels on *each side* of the subsampled identity ("split" padding).


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _RefBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            side = cout // 4
            self.shortcut = _Lambda(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, side, side)))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _RefResNet20(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        chans = [16, 16, 32, 64]
        for i in range(3):
            blocks = [_RefBlock(chans[i] if j == 0 else chans[i + 1], chans[i + 1],
                                2 if i > 0 and j == 0 else 1) for j in range(3)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.avg_pool2d(out, out.size(3)).flatten(1))


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affines, so a wrong convention shows in the logits."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return _randomise_bn(_RefResNet20()), torch.randn(4, 3, 32, 32)


def _save_reimpl(model: nn.Module, path, legacy: bool = False) -> None:
    # That project saves {"epoch", "state_dict" (of a DataParallel model), "best_prec1"} as .th.
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 200, "state_dict": state, "best_prec1": 91.7}, path,
               _use_new_zipfile_serialization=not legacy)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_cifar_reimpl_split_padding_reproduces_logits(tmp_path, reference, legacy):
    ref, x = reference
    path = tmp_path / "resnet20.th"
    _save_reimpl(ref, path, legacy)
    weights = read_weights(path)
    assert weights.layout == "cifar-reimpl" and "fc.weight" in weights.state
    model, args, _ = load_pretrained(path)
    assert args == {"name": "resnet20", "shortcut": "A", "shortcut_pad": "split",
                    "in_chans": 3, "num_classes": 10}
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert (got - expected).abs().max().item() < 1e-5
    # The same weights under the other convention give other logits: the option matters.
    other = resnetlab.create_model("resnet20", shortcut_pad="append").eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (other(x) - expected).abs().max().item() > 1e-3


def test_load_weights_refuses_the_wrong_padding_convention(tmp_path, reference):
    _save_reimpl(reference[0], tmp_path / "resnet20.th")
    with pytest.raises(DataError, match="shortcut_pad='split'"):
        load_weights(resnetlab.create_model("resnet20"), tmp_path / "resnet20.th")
    model = resnetlab.create_model("resnet20", shortcut_pad="split")
    assert load_weights(model, tmp_path / "resnet20.th") == []


def _torchvision_layout_files(tmp_path, name: str, state: dict) -> list:
    """The forms torchvision/timm users have: plain, DDP, compile, wrapped; .pth/.safetensors."""
    files = {
        f"{name}.pth": state,
        f"{name}_ddp.pth": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
        f"{name}_compiled.pt": {"model": {f"_orig_mod.{k}": v for k, v in state.items()},
                                "epoch": 3},
        f"{name}_both.bin": {f"module._orig_mod.{k}": v for k, v in state.items()},
    }
    for file, obj in files.items():
        torch.save(obj, tmp_path / file)
    save_file(state, tmp_path / f"{name}.safetensors")
    prefixed = {f"module.{k}": v for k, v in state.items()}
    save_file(prefixed, tmp_path / f"{name}_ddp.safetensors")
    return [*files, f"{name}.safetensors", f"{name}_ddp.safetensors"]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_layout_loads_with_identical_outputs(tmp_path, name):
    torch.manual_seed(1)
    source = _randomise_bn(resnetlab.create_model(name, num_classes=5))
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(x)
    for file in _torchvision_layout_files(tmp_path, name, state):
        model, args, weights = load_pretrained(tmp_path / file)
        assert weights.layout == "torchvision", file
        assert args["name"] == name and args["num_classes"] == 5, file
        with torch.no_grad():
            assert torch.equal(model(x), expected), file


def test_layout_is_decided_by_content_not_extension(tmp_path):
    state = resnetlab.create_model("resnet20").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "weights.pth")
    torch.save(state, tmp_path / "weights.safetensors")
    for file in ("weights.pth", "weights.safetensors"):
        assert load_pretrained(tmp_path / file)[1]["name"] == "resnet20"
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(DataError, match="notes.pth: unknown weights format"):
        read_weights(tmp_path / "notes.pth")


def test_detect_layout_from_keys():
    assert detect_layout({"conv1.weight": 0, "layer1.0.conv1.weight": 0, "fc.weight": 0}) == (
        "torchvision", {})
    assert detect_layout({"layer1.0.conv1.weight": 0, "layer2.0.shortcut.0.weight": 0,
                          "linear.weight": 0}) == ("cifar-reimpl", {"shortcut": "B"})
    assert detect_layout({"encoder.weight": 0})[0] == "unknown"


def test_strict_names_missing_and_unexpected_keys(tmp_path):
    state = resnetlab.create_model("resnet20").state_dict()
    del state["layer3.2.bn2.weight"]
    state["extra.scale"] = torch.ones(1)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(DataError) as info:
        load_pretrained(tmp_path / "partial.pth", "resnet20", strict=True)
    message = str(info.value)
    assert "1 keys missing from the file: layer3.2.bn2.weight" in message
    assert "1 unexpected: extra.scale" in message and "\n" not in message
    model, _, _ = load_pretrained(tmp_path / "partial.pth", "resnet20", strict=False)
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_another_architecture_is_one_line_naming_keys_and_shapes(tmp_path):
    torch.save(resnetlab.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(DataError) as info:
        load_pretrained(tmp_path / "r18.pth", "resnet50", strict=False)
    message = str(info.value)
    assert "\n" not in message and "r18.pth" in message
    assert "layer1.0.conv1.weight has shape (64, 64, 3, 3) in the file but (64, 64, 1, 1)" in message


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_running_pickle_is_refused_without_torch_advice(tmp_path, capsys):
    marker = tmp_path / "pwned"
    state = resnetlab.create_model("resnet20").state_dict()
    torch.save({"state_dict": state, "hook": Exploit(marker)}, tmp_path / "evil.pth")
    with open(tmp_path / "evil_raw.pth", "wb") as f:  # a bare pickle, torch's legacy framing
        pickle.dump({"state_dict": Exploit(marker)}, f, protocol=2)
    for file in ("evil.pth", "evil_raw.pth"):
        with pytest.raises(DataError) as info:
            load_pretrained(tmp_path / file, "resnet20")
        message = str(info.value)
        assert message.startswith(f"{tmp_path / file}: refused") and "\n" not in message
        assert "posix.system" in message or "os.system" in message
        assert "weights_only" not in message and "safetensors" in message
    from resnetlab.cli.app import main

    with pytest.raises(SystemExit) as stop:
        main(["convert", str(tmp_path / "evil.pth"), str(tmp_path / "out.safetensors")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "refused" in err and "weights_only" not in err
    # The checkpoint reader (behind `resnetlab predict`) refuses it the same way.
    from resnetlab.checkpoint import load_checkpoint

    with pytest.raises(DataError) as info:
        load_checkpoint(tmp_path / "evil.pth")
    assert "weights_only" not in str(info.value) and "safetensors" in str(info.value)
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_convert_round_trip_keeps_logits_and_metadata(tmp_path, reference, capsys):
    ref, x = reference
    from resnetlab.cli.app import main

    _save_reimpl(ref, tmp_path / "resnet20.th")
    out = tmp_path / "r20.safetensors"
    main_args = ["convert", str(tmp_path / "resnet20.th"), str(out), "--strict",
                 "--classes", ",".join(f"c{i}" for i in range(10))]
    try:
        main(main_args)
    except SystemExit as stop:
        assert stop.code in (0, None)
    assert "resnet20(shortcut=A, shortcut_pad=split" in capsys.readouterr().out
    with safe_open(str(out), framework="pt") as f:
        meta = json.loads(f.metadata()["resnetlab"])
    assert meta["model"]["shortcut_pad"] == "split" and meta["classes"][9] == "c9"
    assert meta["source"]["layout"] == "cifar-reimpl" and len(meta["source"]["sha256"]) == 64
    model, args, weights = load_pretrained(out)  # names its own model now
    assert weights.layout == "resnetlab" and args == meta["model"]
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() < 1e-5
    # The checkpoint loader behind `resnetlab predict OUT` rebuilds it from the same header.
    from resnetlab.checkpoint import load_checkpoint

    assert load_checkpoint(out).meta["model"]["shortcut_pad"] == "split"
    with pytest.raises(SystemExit) as stop:  # no silent overwrite
        main(main_args)
    assert stop.value.code == 2 and "--force" in capsys.readouterr().err


def test_convert_needs_a_model_name_when_keys_do_not_tell(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "enc.pt")
    with pytest.raises(ConfigError, match="pass --model NAME"):
        convert_weights(tmp_path / "enc.pt", tmp_path / "enc.safetensors")
    with pytest.raises(ConfigError, match="must end in .safetensors"):
        convert_weights(tmp_path / "enc.pt", tmp_path / "enc.pth", "resnet20")


def test_zero_pad_conventions_place_the_identity_channels():
    from resnetlab.layers import ZeroPadShortcut

    x = torch.randn(2, 16, 8, 8)
    split, append = ZeroPadShortcut(16, 32, 2, pad="split")(x), ZeroPadShortcut(16, 32, 2)(x)
    assert torch.equal(split[:, 8:24], x[:, :, ::2, ::2]) and not split[:, :8].any()
    assert not split[:, 24:].any() and torch.equal(append[:, :16], x[:, :, ::2, ::2])
    with pytest.raises(ConfigError, match="shortcut_pad='middle'"):
        resnetlab.create_model("resnet20", shortcut_pad="middle")
