"""Issue 22, item 2: an ONNX export changed after it was verified is never used silently.

The reproduction: adding 100 to one entry of ``fc.bias`` in a run's ``export/model.onnx``
turned every prediction into one class at p=1.0.  Now the sidecar records the export's own
sha256; ``predict`` re-exports a changed file with a notice, and an ``.onnx`` given directly is
refused when its sidecar disagrees, or used with a notice when it has none.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import resnetlab
from resnetlab.checkpoint import save_checkpoint
from resnetlab.data import build_data
from resnetlab.deploy import load_predictor
from resnetlab.deploy.export import VerificationError, export_model, verified_export
from resnetlab.engine.config import DataConfig

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture()
def run(tmp_path):
    """A run directory with a checkpoint and a verified ONNX export, on a 3-class folder."""
    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp_path / "images" / f"c{c}").mkdir(parents=True)
        for i in range(8):
            pixels = (rng.random((16, 16, 3)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"c{c}" / f"{i}.png")
    bundle = build_data(DataConfig(name=f"folder:{tmp_path / 'images'}", download=False))
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet20", num_classes=3, in_chans=3, width_mult=0.5).eval()
    path = tmp_path / "run"
    save_checkpoint(path / "checkpoints" / "best", model_state=model.state_dict(),
                    meta={"model": model.build_args, "data": bundle.meta, "classes": bundle.classes})
    export_model(path, "onnx")
    return path


def _tamper_fc_bias(onnx_file):
    """The audit's edit: +100 on one entry of the classifier's bias."""
    proto = onnx.load(str(onnx_file))
    for init in proto.graph.initializer:
        if init.name.endswith("fc.bias"):
            bias = onnx.numpy_helper.to_array(init).copy()
            bias[0] += 100.0
            init.CopyFrom(onnx.numpy_helper.from_array(bias, init.name))
            break
    else:
        raise AssertionError("no fc.bias initializer in the export")
    onnx.save(proto, str(onnx_file))


def _images(run):
    return sorted((run.parent / "images").rglob("*.png"))


def test_sidecar_records_the_exports_own_sha256(run):
    import json

    from resnetlab.utils.files import file_sha256

    sidecar = json.loads((run / "export" / "model.onnx.json").read_text())
    assert sidecar["file_sha256"] == file_sha256(run / "export" / "model.onnx")


def test_tampered_run_export_is_reexported_with_a_notice(run):
    honest = [(p.indices[0], round(p.probs[0], 4)) for p in load_predictor(run, runtime="onnx").predict(_images(run))]
    _tamper_fc_bias(run / "export" / "model.onnx")
    assert verified_export(run) is None  # the hash no longer matches: not trusted
    predictor = load_predictor(run, runtime="onnx")
    assert any("changed after it was verified" in n and "re-exporting" in n
               for n in predictor.notices), predictor.notices
    again = [(p.indices[0], round(p.probs[0], 4)) for p in predictor.predict(_images(run))]
    assert again == honest  # the re-export, not the tampered file, answered
    assert verified_export(run) == run / "export" / "model.onnx"


def test_tampered_onnx_given_directly_is_refused(run):
    _tamper_fc_bias(run / "export" / "model.onnx")
    with pytest.raises(VerificationError, match="changed after it was verified"):
        load_predictor(run / "export" / "model.onnx")


def test_onnx_without_sidecar_is_used_with_an_unverified_notice(run, tmp_path):
    alone = tmp_path / "alone.onnx"
    alone.write_bytes((run / "export" / "model.onnx").read_bytes())
    predictor = load_predictor(alone)
    assert len(predictor.notices) == 1 and "unverified" in predictor.notices[0]


def test_verified_onnx_given_directly_has_no_notice(run):
    assert load_predictor(run / "export" / "model.onnx").notices == []
