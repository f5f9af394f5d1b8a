"""`resnetlab serve` flags: registered with exactly the issue's names, and every impossible
value is one `error:` line (exit 2) before anything is loaded or bound."""

from __future__ import annotations

import pytest
import torch

from helpers import Exploit, cli, one_line_error
from resnetlab.checkpoint import save_checkpoint
from resnetlab.models import create_model
from resnetlab.run.serving import ServeConfig


def test_serve_is_registered_with_its_flags(capsys):
    code, out, _ = cli(capsys, "serve", "--help")
    assert code == 0 and "RUN_OR_MODEL_FILE" in out
    for flag in ("--host", "--port", "--backend", "--int8", "--max-batch", "--max-wait-ms",
                 "--workers", "--max-body"):
        assert flag in out, flag
    assert "127.0.0.1" in out and "10MB" in out


@pytest.mark.parametrize("args, needle", [
    (["missing-run"], "missing-run: no such run directory or model file"),
    (["{tmp}", "--backend", "tensorflow"], "--backend 'tensorflow': choose ort or torch"),
    (["{tmp}", "--backend", "torch", "--int8"], "--int8 runs the int8 ONNX export"),
    (["{tmp}", "--max-batch", "0"], "--max-batch 0: must be at least 1"),
    (["{tmp}", "--workers", "0"], "--workers 0: must be at least 1"),
    (["{tmp}", "--max-body", "ten"], "--max-body ten: give a size like 10MB"),
    (["{tmp}", "--backend", "torch"], "no checkpoint here"),
])
def test_bad_flags_are_one_line_errors(args, needle, tmp_path, capsys):
    code, _, err = cli(capsys, "serve", *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and needle in one_line_error(err), err


def test_config_defaults_are_safe():
    cfg = ServeConfig("run")
    assert cfg.host == "127.0.0.1" and cfg.port == 8000 and cfg.max_body == 10_000_000
    assert (cfg.max_batch, cfg.max_wait_ms, cfg.workers, cfg.int8) == (32, 5.0, 1, False)


def test_pickled_weights_are_never_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": Exploit(marker)}, tmp_path / "evil.pt")
    code, _, err = cli(capsys, "serve", tmp_path / "evil.pt", "--backend", "torch")
    assert code == 2 and one_line_error(err) and not marker.exists()


def test_int8_needs_a_verified_int8_export(tmp_path, capsys):
    model = create_model("resnet20", in_chans=1, num_classes=3, width_mult=0.25)
    meta = {"kind": "image", "name": "t", "in_chans": 1, "image_size": [8, 8], "mean": [0.5],
            "std": [0.5], "classes": ["a", "b", "c"]}
    save_checkpoint(tmp_path / "run" / "checkpoints" / "best", model_state=model.state_dict(),
                    meta={"model": model.build_args, "data": meta, "classes": meta["classes"]})
    code, _, err = cli(capsys, "serve", tmp_path / "run", "--int8")
    assert code == 2 and "no verified int8 export" in one_line_error(err)
    assert "resnetlab export" in err
    (tmp_path / "m.onnx").write_bytes(b"")
    code, _, err = cli(capsys, "serve", tmp_path / "m.onnx", "--int8")
    assert code == 2 and "an .onnx file is served as it is" in one_line_error(err)
