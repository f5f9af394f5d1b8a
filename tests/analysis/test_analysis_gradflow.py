"""Gradient flow: finite, ordered numbers on a residual net; non-finite values stay non-finite."""

import csv
import math

import torch
from torch import nn

from resnetlab.analysis.gradflow import describe, magnitude, measure_gradflow, summarize
from resnetlab.analysis.studies import run_gradflow
from resnetlab.models import create_model


def _batches(n=2, size=16):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 1, size, size, generator=g), torch.randint(0, 4, (8,), generator=g))
            for _ in range(n)]


def _model(name, **kw):
    torch.manual_seed(0)
    return create_model(name, in_chans=1, num_classes=4, width_mult=0.5, **kw)


def test_residual_net_numbers_are_finite_and_complete():
    model = _model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flow = measure_gradflow(model, _batches(), label="resnet20")
    assert len(flow.layers) == 20  # 19 convs + fc (option A: no projection convs)
    assert len(flow.blocks) == 9
    for row in flow.layers:
        assert math.isfinite(row["weight_grad_norm"]) and row["weight_grad_norm"] > 0
    for row in flow.blocks:
        for key in ("input_grad_norm", "act_rms", "branch_skip_ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    s = summarize(flow)
    assert s["nonfinite"] == 0 and s["layers"] == 19
    assert math.isclose(s["first_last_ratio"], flow.layers[0]["weight_grad_norm"] / flow.layers[18]["weight_grad_norm"])
    # the caller's model is untouched: no grads, same BN statistics
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_plain_net_has_no_branch_ratio():
    flow = measure_gradflow(_model("plain20"), _batches(1), label="plain20")
    assert all(math.isnan(r["branch_skip_ratio"]) for r in flow.blocks)
    assert all(math.isfinite(r["input_grad_norm"]) for r in flow.blocks)


def _overflowing():
    """A plain net without normalisation whose weights are scaled so the forward pass overflows
    float32 (what plain-1202 does at large learning rates)."""
    model = _model("plain20", norm_layer=nn.Identity)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(1e3)
    return model


def test_nonfinite_gradients_are_reported_not_zeroed(tmp_path):
    flow = measure_gradflow(_overflowing(), _batches(1), label="plain20")
    grads = [r["weight_grad_norm"] for r in flow.layers]
    assert any(not math.isfinite(g) for g in grads)
    assert all(g != 0 for g in grads)  # never a silent zero
    s = summarize(flow)
    assert s["nonfinite"] > 0
    assert "non-finite" in describe([s])[0]
    result = run_gradflow([("plain20", _overflowing()), ("resnet20", _model("resnet20"))],
                          _batches(1), tmp_path)
    assert (tmp_path / "gradflow.png").stat().st_size > 1000
    with (tmp_path / "gradflow.csv").open() as fh:
        cells = [r["weight_grad_norm"] for r in csv.DictReader(fh) if r["model"] == "plain20" and r["kind"] == "weight"]
    assert any(c in ("nan", "inf") for c in cells) and "" not in cells and "0.0" not in cells
    assert result["summaries"][0]["nonfinite"] > 0
    assert (tmp_path / "gradflow.json").read_text().count('"nan"') + (tmp_path / "gradflow.json").read_text().count('"inf"') > 0


def test_findings_are_computed_from_the_numbers():
    base = {"layers": 55, "spread": 4000.0, "logits_std": 0.3, "nonfinite": 0}
    plain = {**base, "model": "plain56", "first_last_ratio": 1400.0}
    res = {**base, "model": "resnet56", "first_last_ratio": 8.0, "spread": 10.0}
    lines = describe([res, plain])
    assert "early layers of plain56 receive 10^3x larger" in lines[1]
    assert "early layers of resnet56 receive 8x larger" in lines[0]
    assert "contradicts the textbook vanishing-gradient story" in lines[2]
    vanish = describe([{**plain, "first_last_ratio": 1e-4, "logits_std": 0.05}], norm="none")
    assert "10^4x smaller" in vanish[0] and "agrees with the textbook story" in vanish[1]
    assert "forward signal vanishes" in vanish[1]
    assert magnitude(float("inf")) == "non-finite" and magnitude(740.0) == "740x"


def test_a_run_is_measured_at_init_and_once_per_distinct_checkpoint(tmp_path, capsys):
    from helpers import cli, write_folder
    from resnetlab.analysis.studies import gradflow_targets

    folder = write_folder(tmp_path / "animals")
    code, _, err = cli(capsys, "train", f"--data=folder:{folder}", "--model", "resnet20",
                       "--width-mult", "0.25", "--batch-size", "8", "--epochs", "1",
                       "--device", "cpu", "--precision", "fp32", "--no-progress", "--no-tta",
                       "--runs-dir", tmp_path / "runs", "--name", "r")
    assert code == 0, err
    targets = gradflow_targets([str(tmp_path / "runs" / "r")], compare_plain=True, norm="batch",
                               seed=0, in_chans=1, num_classes=3)
    labels = [label for label, _ in targets]
    # one epoch: best and last are the same step, so one measurement names both
    assert labels == ["resnet20@init", "resnet20@best=last (epoch 1)", "plain20@init"]
    trained = targets[1][1].state_dict()
    assert not torch.equal(trained["conv1.weight"], targets[0][1].state_dict()["conv1.weight"])
