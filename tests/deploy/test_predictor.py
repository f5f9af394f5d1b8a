"""deploy.predictor: rebuilding networks from checkpoints and weights, top-k prediction."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

import resnetlab
from helpers import build
from resnetlab.checkpoint import save_checkpoint
from resnetlab.data import preprocess_inputs
from resnetlab.deploy import BACKENDS, Predictor, TorchBackend, load_model, load_predictor
from resnetlab.utils.errors import ConfigError, DataError

ARGS = {"name": "resnet20", "num_classes": 4, "in_chans": 1, "width_mult": 0.25, "shortcut": "B"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """4 classes x 6 grey 16x16 PNGs, one of them in a nested folder."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"class{c}").mkdir()
        for i in range(6):
            pixels = (rng.random((16, 16)) * 60 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    (root / "class0" / "nested").mkdir()
    (root / "class0" / "5.png").rename(root / "class0" / "nested" / "5.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(folder, tmp_path_factory):
    """A resnetlab checkpoint directory as the trainer writes it (meta: model, data, classes)."""
    bundle = build(f"folder:{folder}", batch_size=8, download=False)
    torch.manual_seed(0)
    model = resnetlab.create_model(**{k: v for k, v in ARGS.items() if k != "name"},
                                   name=ARGS["name"]).eval()
    path = tmp_path_factory.mktemp("ckpt") / "best"
    meta = {"model": model.build_args, "data": bundle.meta, "classes": bundle.classes}
    save_checkpoint(path, model_state=model.state_dict(), meta=meta)
    return path, model, bundle


def test_load_model_rebuilds_the_network(checkpoint):
    path, model, bundle = checkpoint
    loaded = load_model(path)
    assert loaded.build_args == model.build_args
    assert loaded.classes == bundle.classes and not loaded.model.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_topk_is_sorted_sums_to_one_and_matches_the_model(checkpoint, folder):
    path, model, _ = checkpoint
    predictor = load_predictor(path, device="cpu", batch_size=5)  # several chunks
    predictions = predictor.predict([folder], k=4)
    files = sorted(folder.rglob("*.png"))
    assert len(files) == 24 and sorted(p.input for p in predictions) == sorted(map(str, files))
    x, labels = preprocess_inputs([folder], load_model(path).data_meta)
    with torch.no_grad():
        expected = model(x).softmax(dim=1)
    for row, p in enumerate(predictions):
        assert p.input == labels[row]
        assert p.probs == sorted(p.probs, reverse=True)
        assert sum(p.probs) == pytest.approx(1.0, abs=1e-5)  # k = all classes
        assert p.indices[0] == int(expected[row].argmax())
        assert p.probs[0] == pytest.approx(float(expected[row].max()), abs=1e-5)
        assert p.classes == [f"class{i}" for i in p.indices]


def test_topk_is_clipped_to_the_number_of_classes(checkpoint, folder):
    predictor = load_predictor(checkpoint[0], device="cpu")
    (p,) = predictor.predict([folder / "class1" / "0.png"], k=10)
    assert len(p.probs) == 4 and 0.0 < sum(p.probs) <= 1.0 + 1e-6
    (p,) = predictor.predict([folder / "class1" / "0.png"], k=2)
    assert len(p.classes) == 2 and p.to_dict()["topk"][0]["class"] == p.classes[0]
    with pytest.raises(ConfigError, match="--top-k 0"):
        predictor.predict([folder / "class1" / "0.png"], k=0)


def test_bare_weights_need_a_matching_architecture(checkpoint, tmp_path):
    _, model, _ = checkpoint
    weights = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    with pytest.raises(ConfigError, match="pass --model"):
        load_model(weights)
    # trained with shortcut B (projections); resnet20's default option A has none: one line
    with pytest.raises(DataError, match="does not fit this model: .*unexpected"):
        load_model(weights, model="resnet20", in_chans=1)
    # with the arguments it was built with (``--set KEY=VALUE``) it loads exactly
    loaded = load_model(weights, model="resnet20", model_kwargs={"width_mult": 0.25, "shortcut": "B"})
    assert loaded.build_args == {**ARGS, "in_chans": 1}
    assert all(v.equal(model.state_dict()[k]) for k, v in loaded.model.state_dict().items())


def test_rgb_input_is_converted_like_training(checkpoint, tmp_path):
    rgb = tmp_path / "photo.jpg"
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(rgb)
    (p,) = load_predictor(checkpoint[0], device="cpu").predict([rgb], k=1)
    assert p.input == str(rgb) and 0.0 < p.probs[0] <= 1.0


def test_bare_weights_with_model_arguments(checkpoint, tmp_path, folder):
    _, model, bundle = checkpoint
    plain = resnetlab.create_model("resnet20", num_classes=4, in_chans=1).eval()
    weights = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(plain.state_dict(), weights)
    loaded = load_model(weights, model="resnet20")  # num_classes 4 and in_chans 1 read off
    assert loaded.build_args == {"name": "resnet20", "num_classes": 4, "in_chans": 1}
    assert loaded.classes == ["0", "1", "2", "3"] and loaded.data_meta is None
    with pytest.raises(DataError, match="conv1.weight"):  # mismatched channels: one line
        load_model(weights, model="resnet20", in_chans=3)
    predictor = load_predictor(weights, model="resnet20", device="cpu")
    # a grey CIFAR-family net gets the Fashion-MNIST preset, and says so once
    assert predictor.data_meta["preset"] == "fashion-mnist" and len(predictor.notices) == 1
    assert len(predictor.predict([folder / "class2"], k=1)) == 6
    mlp = resnetlab.create_model("mlp_resnet", num_classes=4, in_features=8)
    safetensors.torch.save_file(mlp.state_dict(), tmp_path / "mlp.safetensors")
    with pytest.raises(ConfigError, match="--data"):  # tables have no preset
        load_predictor(tmp_path / "mlp.safetensors", model="mlp_resnet").predict([folder])
    with_meta = load_predictor(weights, model="resnet20", device="cpu", data_meta=bundle.meta)
    assert with_meta.classes == bundle.classes
    assert len(with_meta.predict([folder / "class2"], k=1)) == 6


def test_pt_state_dict_loads_weights_only(tmp_path):
    net = resnetlab.create_model("resnet20", num_classes=3, in_chans=1)
    path = tmp_path / "net.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    loaded = load_model(path, model="resnet20")
    assert loaded.build_args["num_classes"] == 3
    assert torch.equal(loaded.model.fc.weight, net.fc.weight)


def test_checkpoint_names_its_own_architecture(checkpoint):
    with pytest.raises(ConfigError, match="holds a resnet20 checkpoint.*drop --model resnet32"):
        load_model(checkpoint[0], model="resnet32")
    with pytest.raises(ConfigError, match="drop --set"):
        load_model(checkpoint[0], model_kwargs={"width_mult": 2})


def test_backends_are_pluggable(checkpoint):
    loaded = load_model(checkpoint[0])
    calls = []

    def recording(x):
        calls.append(len(x))
        return torch.zeros(len(x), 4)

    predictor = Predictor(recording, loaded.classes, loaded.data_meta, batch_size=3)
    probs = predictor.probabilities(torch.zeros(7, 1, 16, 16))
    assert calls == [3, 3, 1] and torch.allclose(probs, torch.full((7, 4), 0.25))
    assert "torch" in BACKENDS
    with pytest.raises(ConfigError, match="--runtime"):
        load_predictor(checkpoint[0], runtime="nope")
    logits = TorchBackend(loaded.model, "cpu")(torch.zeros(2, 1, 16, 16))
    assert logits.shape == (2, 4) and logits.dtype == torch.float32
