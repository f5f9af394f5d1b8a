"""deploy: BN folding, verified export (ONNX, TorchScript, safetensors), int8, and prediction
through both runtimes (streaming, bad images, presets, foreign ONNX files)."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from torch import nn

import resnetlab
from resnetlab.checkpoint import save_checkpoint
from resnetlab.cli.app import main
from resnetlab.data import build_data
from resnetlab.deploy import Predictor, fold_bn, load_predictor
from resnetlab.deploy.export import VerificationError, export_model, verified_export, verify
from resnetlab.engine.config import DataConfig
from resnetlab.utils.errors import ConfigError, DataError

pytest.importorskip("onnxruntime")


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so folding has something to fold."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return model.eval()


def _images(root, classes=3, per_class=12, size=16, mode="RGB"):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray((rng.random(shape) * 80 + 60 * c).astype(np.uint8)).save(
                root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _images(tmp_path_factory.mktemp("deploy") / "images")


MODELS = {"cifar": ("resnet20", {"width_mult": 0.5}), "imagenet": ("resnet18", {"width_mult": 0.25})}


@pytest.fixture(scope="module", params=sorted(MODELS))
def run(request, folder, tmp_path_factory):
    """A run directory as training writes it, for a CIFAR-family and an ImageNet-family net."""
    name, kwargs = MODELS[request.param]
    bundle = build_data(DataConfig(name=f"folder:{folder}", download=False))
    torch.manual_seed(0)
    model = _randomise_bn(resnetlab.create_model(name, num_classes=3, in_chans=3, **kwargs))
    path = tmp_path_factory.mktemp(f"run-{request.param}")
    save_checkpoint(path / "checkpoints" / "best", model_state=model.state_dict(),
                    meta={"model": model.build_args, "data": bundle.meta, "classes": bundle.classes})
    return path, model, bundle


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "resnet18d", "preact_resnet20"])
def test_fold_bn_matches_unfolded(name):
    model = _randomise_bn(resnetlab.create_model(name, num_classes=7, width_mult=0.25))
    folded = fold_bn(model)
    x = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = model(x), folded(x)
    # within 1e-5 of the logit scale (random BN statistics grow ResNet-50's logits to ~300)
    assert (got - ref).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max()))
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    after = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    if name.startswith("preact"):  # BNs that read a block's input (not a conv's) stay
        assert 0 < after < before
    else:
        assert after == 0 and before > 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == before  # a copy


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip_matches_eager(run, fmt):
    path, model, bundle = run
    result = export_model(path, fmt, fold=True)
    assert result.path == path / "export" / {"onnx": "model.onnx",
                                             "torchscript": "model.torchscript.pt"}[fmt]
    assert result.check["ok"] and result.check["top1_agreement"] == 1.0
    assert result.check["max_abs_diff"] < 1e-4 and result.check["inputs"] > 0
    sidecar = json.loads((result.path.parent / (result.path.name + ".json")).read_text())
    assert sidecar["classes"] == bundle.classes and sidecar["data"]["mean"] == bundle.meta["mean"]
    x = torch.randn(5, 3, 16, 16)  # another batch size than the export's: dynamic batch
    with torch.no_grad():
        expected = model(x)
    if fmt == "onnx":
        from resnetlab.deploy.onnx import OnnxBackend

        backend = OnnxBackend(result.path)
        assert backend.meta["data"]["image_size"] == [16, 16]
        assert backend.meta["check"]["ok"]
        got = backend(x)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's own notice
            got = torch.jit.load(str(result.path))(x)
    assert torch.allclose(got, expected, atol=1e-4)


def test_safetensors_export_is_self_describing(run, folder):
    path, model, _ = run
    result = export_model(path, "safetensors", out=path / "w.safetensors")
    assert result.check["max_abs_diff"] == 0.0
    predictor = load_predictor(result.path, runtime="torch")  # no --model, no --data needed
    (p,) = predictor.predict([folder / "c1" / "0.png"], k=1)
    assert p.classes[0] in ("c0", "c1", "c2")
    with pytest.raises(ConfigError, match="--fold-bn"):
        export_model(path, "safetensors", fold=True)


def test_both_runtimes_give_the_same_answers(run, folder):
    path, _, _ = run
    export_model(path, "onnx")
    torch_p = Predictor.from_path(path, runtime="torch").predict([folder], k=3)
    onnx_p = Predictor.from_path(path / "export" / "model.onnx").predict([folder], k=3)
    assert [p.input for p in torch_p] == [p.input for p in onnx_p] and len(torch_p) == 36
    for a, b in zip(torch_p, onnx_p, strict=True):
        assert a.indices[0] == b.indices[0]
        assert np.allclose(a.probs, b.probs, atol=1e-4)
    assert Predictor.from_path(path).runtime == "onnx"  # auto: the verified export


def test_a_stale_export_is_not_used(run, tmp_path):
    path, model, bundle = run
    export_model(path, "onnx")
    assert verified_export(path) == path / "export" / "model.onnx"
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_checkpoint(path / "checkpoints" / "best", model_state=state,
                    meta={"model": model.build_args, "data": bundle.meta, "classes": bundle.classes})
    try:
        assert verified_export(path) is None
        before = (path / "export" / "model.onnx").stat().st_mtime_ns
        fresh = Predictor.from_path(path)  # auto: a new export for the new checkpoint
        assert fresh.runtime == "onnx" and "exported once" in fresh.notices[-1]
        assert (path / "export" / "model.onnx").stat().st_mtime_ns != before
        assert verified_export(path) == path / "export" / "model.onnx"
    finally:
        save_checkpoint(path / "checkpoints" / "best", model_state=model.state_dict(),
                        meta={"model": model.build_args, "data": bundle.meta,
                              "classes": bundle.classes})


def test_int8_runs_agrees_and_respects_max_drop(run, folder):
    path, _, _ = run
    result = export_model(path, "onnx", int8=True, max_drop=100.0)
    q = result.int8
    assert q["kept"] and (path / "export" / "model.int8.onnx").is_file()
    assert q["top1_agreement"] >= 0.75 and q["test_images"] > 0
    assert Predictor.from_path(path).backend.path.name == "model.int8.onnx"  # fastest verified
    int8 = Predictor.from_path(path / "export" / "model.int8.onnx").predict([folder], k=1)
    fp32 = Predictor.from_path(path / "export" / "model.onnx").predict([folder], k=1)
    agree = np.mean([a.indices[0] == b.indices[0] for a, b in zip(int8, fp32, strict=True)])
    assert agree >= 0.75
    strict = export_model(path, "onnx", int8=True, max_drop=-1.0)  # any change is too much
    assert not strict.int8["kept"] and not (path / "export" / "model.int8.onnx").exists()
    assert verified_export(path) == path / "export" / "model.onnx"


def test_export_command_prints_the_check(run, capsys):
    path, _, _ = run
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(path), "--int8", "--fold-bn", "--out", str(path / "cli" / "m.onnx")])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and (path / "cli" / "m.onnx").is_file()
    assert "max abs diff" in out and "top-1 agreement 100.0%" in out
    assert "int8: test accuracy" in out and "points on" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(path), "--format", "torchscript", "--int8"])
    assert exit_info.value.code == 2 and "--int8 needs --format onnx" in capsys.readouterr().err


def test_failed_verification_is_an_error():
    model = nn.Linear(4, 3)
    with pytest.raises(VerificationError, match="verification failed"):
        verify(model, lambda x: model(x) + 1.0, torch.randn(8, 4), "x.onnx")


def test_export_of_a_corrupt_checkpoint_names_the_file(tmp_path, capsys):
    ckpt = tmp_path / "run" / "checkpoints" / "best"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"garbage")
    (ckpt / "meta.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "model.safetensors" in err


@pytest.fixture()
def broken_folder(folder, tmp_path):
    root = _images(tmp_path / "broken", classes=1, per_class=5)
    (root / "c0" / "2.png").write_bytes(b"not a png")
    return root


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_predict_folder_with_a_broken_file(run, broken_folder, runtime, capsys):
    path, _, _ = run
    export_model(path, "onnx")
    source = path if runtime == "torch" else path / "export" / "model.onnx"
    predictor = load_predictor(source, runtime=runtime, batch_size=2)
    with pytest.raises(DataError, match=r"2\.png.*--on-bad-image skip"):
        predictor.predict([broken_folder])
    skipping = load_predictor(source, runtime=runtime, batch_size=2, on_bad_image="skip")
    assert len(skipping.predict([broken_folder])) == 4
    assert skipping.skipped == [str(broken_folder / "c0" / "2.png")]
    args = ["predict", str(source), str(broken_folder), "--runtime", runtime, "--json"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and "2.png" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--on-bad-image", "skip"])
    assert exit_info.value.code == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert len(rows) == 4 and rows[0]["topk"] and "2.png" not in out
    assert "skipped 1 unreadable image(s)" in err and "images/s" in err


def test_decompression_bombs_stay_refused(run, tmp_path, monkeypatch):
    """An image over PIL's pixel limit is a bad image: named, or skipped and counted."""
    path, _, _ = run
    root = _images(tmp_path / "bomb", classes=1, per_class=3)
    Image.new("RGB", (64, 64)).save(root / "c0" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 > 2x the limit: refused
    with pytest.raises(DataError, match="huge.png"):
        load_predictor(path, runtime="torch").predict([root])
    skipping = load_predictor(path, runtime="torch", on_bad_image="skip")
    assert len(skipping.predict([root])) == 3 and skipping.skipped == [str(root / "c0" / "huge.png")]


def test_predict_streams_in_batches(tmp_path, monkeypatch):
    """A folder of 2000 tiny images is decoded batch by batch, never all at once."""
    import resnetlab.data

    root = tmp_path / "many" / "c0"
    root.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, (2000, 4, 4), dtype=np.uint8)
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(root / f"{i:04d}.png")
    model = resnetlab.create_model("resnet20", num_classes=2, in_chans=1, width_mult=0.25)
    meta = {"kind": "image", "name": "x", "in_chans": 1, "image_size": [4, 4], "mean": [0.5],
            "std": [0.25], "classes": ["a", "b"]}
    save_checkpoint(tmp_path / "ckpt", model_state=model.state_dict(),
                    meta={"model": model.build_args, "data": meta, "classes": ["a", "b"]})
    decoded = []
    real = resnetlab.data.decode_images  # the image decoding predict and serve share
    monkeypatch.setattr(resnetlab.data, "decode_images",
                        lambda files, m, **kw: (decoded.append(len(files)), real(files, m, **kw))[1])
    stream = load_predictor(tmp_path / "ckpt", runtime="torch", batch_size=100).iter_predict(
        [tmp_path / "many"], k=1)
    next(stream)
    assert sum(decoded) == 100  # the first answer comes after one batch, not 2000 decodes
    assert 1 + sum(1 for _ in stream) == 2000 and max(decoded) == 100 and sum(decoded) == 2000


def test_bare_weights_get_their_family_preset(tmp_path, folder):
    net = resnetlab.create_model("resnet18", num_classes=5, width_mult=0.25)
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file(net.state_dict(), weights)
    predictor = load_predictor(weights, model="resnet18", model_kwargs={"width_mult": 0.25})
    assert predictor.data_meta["image_size"] == [224, 224] and predictor.data_meta["preset"] == "imagenet"
    assert "imagenet preset" in predictor.notices[0]
    assert len(predictor.predict([folder / "c0" / "0.png"], k=2)) == 1
    grey = resnetlab.create_model("resnet20", num_classes=10, in_chans=1)
    safetensors.torch.save_file(grey.state_dict(), tmp_path / "g.safetensors")
    g = load_predictor(tmp_path / "g.safetensors", model="resnet20")
    assert g.data_meta["preset"] == "fashion-mnist" and g.classes[0] == "T-shirt/top"
    fm = {"kind": "image", "name": "fashion-mnist", "in_chans": 1, "image_size": [28, 28],
          "mean": [0.3], "std": [0.3], "classes": [str(i) for i in range(10)]}
    with pytest.raises(ConfigError, match="3-channel images but fashion-mnist has 1"):
        load_predictor(weights, model="resnet18", model_kwargs={"width_mult": 0.25}, data_meta=fm)


def test_colour_images_into_a_grey_model_are_converted_once(tmp_path, folder):
    model = resnetlab.create_model("resnet20", num_classes=3, in_chans=1, width_mult=0.25)
    meta = {"kind": "image", "name": "x", "in_chans": 1, "image_size": [16, 16], "mean": [0.5],
            "std": [0.25], "classes": ["a", "b", "c"]}
    save_checkpoint(tmp_path / "ckpt", model_state=model.state_dict(),
                    meta={"model": model.build_args, "data": meta, "classes": meta["classes"]})
    predictor = load_predictor(tmp_path / "ckpt", runtime="torch", batch_size=4)
    assert len(predictor.predict([folder], k=1)) == 36
    assert len(predictor.notices) == 1 and "converted to 1 (grey)" in predictor.notices[0]


@pytest.mark.filterwarnings("ignore")  # the legacy exporter's deprecation notes
def test_foreign_onnx_with_static_shape_uses_defaults(tmp_path, folder):
    net = resnetlab.create_model("resnet20", num_classes=4, width_mult=0.25).eval()
    static = tmp_path / "static.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 20, 20),), str(static), dynamo=False)
    predictor = Predictor.from_path(static)
    assert "unverified" in predictor.notices[0]  # no sidecar recorded a verified export
    assert "no resnetlab preprocessing metadata" in predictor.notices[1]
    out = predictor.predict([folder / "c0"], k=1)  # 12 images through a fixed batch of 2... padded
    assert len(out) == 12 and out[0].classes[0] in ("0", "1", "2", "3")
    dynamic = tmp_path / "dynamic.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 20, 20),), str(dynamic), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    with pytest.raises(ConfigError, match="not a static"):
        Predictor.from_path(dynamic)
    with pytest.raises(ConfigError, match="--runtime torch"):
        Predictor.from_path(static, runtime="torch")


def test_batch_size_zero_is_one_line(run, folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(run[0]), str(folder), "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --batch-size 0: must be at least 1"


def _copy_run(path, dest):
    """A fresh run directory (no export yet) holding ``path``'s checkpoint."""
    shutil.copytree(path / "checkpoints", dest / "checkpoints")
    return dest


def test_predict_exports_a_run_once_and_reuses_it(run, folder, tmp_path, monkeypatch, capsys):
    import resnetlab.deploy.export as export

    path = _copy_run(run[0], tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(path), str(folder), "--runtime", "torch", "--json"])
    assert exit_info.value.code == 0
    assert not (path / "export").exists()  # --runtime torch never exports
    torch_rows = json.loads(capsys.readouterr().out)
    calls = []
    real = export.export_model
    monkeypatch.setattr(export, "export_model", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(path), str(folder), "--json"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0 and len(calls) == 1
    assert err.count("exported once") == 1 and "(onnx runtime)" in err and "random" not in err
    onnx_file = path / "export" / "model.onnx"
    assert verified_export(path) == onnx_file
    sidecar = json.loads((path / "export" / "model.onnx.json").read_text())
    assert sidecar["check"]["ok"] and sidecar["check"]["inputs"] > 0  # the run's real test images
    assert not list((path / "export").glob(".staging-*"))
    for a, b in zip(torch_rows, json.loads(out), strict=True):
        assert a["input"] == b["input"] and a["topk"][0]["index"] == b["topk"][0]["index"]
        assert np.allclose([t["prob"] for t in a["topk"]], [t["prob"] for t in b["topk"]],
                           atol=1e-4)
    mtime = onnx_file.stat().st_mtime_ns
    again = Predictor.from_path(path)
    assert again.runtime == "onnx" and not again.notices and len(calls) == 1
    assert onnx_file.stat().st_mtime_ns == mtime


def test_a_read_only_run_predicts_with_torch(run, folder, tmp_path, monkeypatch):
    import resnetlab.deploy.export as export

    path = _copy_run(run[0], tmp_path / "run")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(export.tempfile, "mkdtemp", refuse)  # as a read-only folder refuses
    predictor = Predictor.from_path(path)
    assert predictor.runtime == "torch" and "cannot write an ONNX export" in predictor.notices[0]
    assert len(predictor.predict([folder / "c0"], k=1)) == 12
    assert verified_export(path) is None


def test_a_failed_export_leaves_no_file(run, tmp_path, monkeypatch):
    import resnetlab.deploy.export as export

    path = _copy_run(run[0], tmp_path / "run")

    def wrong(reference, candidate, x, what, **kwargs):
        raise VerificationError(f"{what}: verification failed")

    monkeypatch.setattr(export, "verify", wrong)
    with pytest.raises(VerificationError):
        export_model(path, "onnx")
    assert list((path / "export").iterdir()) == []  # nothing half-written, no staging left


def test_imagenet_preset_resizes_the_short_side_then_crops(tmp_path):
    from resnetlab.deploy.presets import preset_meta

    meta = {**preset_meta("imagenet"), "image_size": [4, 4], "resize_short": 8,
            "mean": [0.0] * 3, "std": [1.0] * 3}
    assert preset_meta("imagenet")["resize_short"] == 256
    pixels = np.random.default_rng(0).integers(0, 255, (8, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "wide.png")  # short side 8 already: no resampling
    predictor = Predictor(lambda x: x.flatten(1)[:, :2], ["a", "b"], meta)
    x, _ = predictor._decode([tmp_path / "wide.png"])
    expected = torch.from_numpy(pixels[2:6, 6:10]).permute(2, 0, 1).float() / 255
    assert x.shape == (1, 3, 4, 4) and torch.allclose(x[0], expected, atol=1e-6)
