"""The HTML report in a real headless browser (Debian's chromium + chromium-driver, driven by
selenium): no console errors, every image decodes, the key numbers are in the rendered text."""

import json
from pathlib import Path

import pytest
import torch

from helpers import needs_chromium, render_in_chromium
from resnetlab.analysis import plot_confusion, plot_curves
from resnetlab.analysis.lesion import lesion_study
from resnetlab.analysis.plots import plot_lesions
from resnetlab.analysis.report import run_sections, write_report
from resnetlab.analysis.studies import run_gradflow
from resnetlab.models import create_model
from resnetlab.utils.errors import DataError


def _run_dir(root: Path) -> Path:
    """A finished run as `resnetlab train` leaves it, plus gradflow and lesion studies."""
    run = root / "run-a"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,train_loss,val_loss,val_top1\n1,0.9,0.7,0.81\n2,0.5,0.45,0.874\n")
    (run / "config.yaml").write_text("model:\n  name: resnet20\ntrain:\n  epochs: 2\n")
    confusion = [[45, 5], [3, 47]]
    (run / "results.json").write_text(json.dumps({
        "split": "test", "top1": 0.9333, "top5": 0.9987, "val_top1": 0.874, "loss": 0.2468,
        "num_samples": 100, "epochs": 2, "steps": 860, "tta": True, "confusion": confusion}))
    plot_curves(run / "metrics.csv", run / "curves.png")
    plot_confusion(confusion, ["cat", "dog<&>"], run / "confusion.png")
    torch.manual_seed(0)
    models = [(n, create_model(n, in_chans=1, num_classes=4, width_mult=0.25)) for n in ("resnet20", "plain20")]
    batches = [(torch.randn(8, 1, 12, 12), torch.randint(0, 4, (8,)))]
    run_gradflow(models, batches, run / "analysis")
    study = lesion_study(models[0][1].eval(), batches, label="resnet20", max_k=2, draws=2)
    plot_lesions([vars(study)], run / "analysis" / "lesion.png")
    (run / "analysis" / "lesion.json").write_text(json.dumps(
        {"findings": ["removing one block costs at most 1.25 points"], "figure": "lesion.png"}))
    return run


def test_report_sections_and_self_contained_file(tmp_path):
    run = _run_dir(tmp_path)
    title, sections = run_sections(run)
    assert title == "run-a"
    names = [s.title for s in sections]
    assert names[0] == "Summary" and "Gradient flow" in names and "Configuration" in names
    assert any(t.startswith("Block lesions") for t in names)
    html = write_report(run).read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") == 4   # curves, confusion, gradflow, lesion
    assert "93.33%" in html and "dog&lt;&amp;&gt;" not in html  # class names live in the PNG
    with pytest.raises(DataError, match="not a run directory"):
        run_sections(tmp_path)


@needs_chromium
def test_report_renders_in_headless_chromium(tmp_path):
    report = write_report(_run_dir(tmp_path))
    widths, text, errors = render_in_chromium(report, tmp_path / "profile")
    assert errors == []
    assert len(widths) == 4 and all(w > 0 for w in widths), widths
    for needle in ("93.33%", "99.87%", "87.40%", "early layers of plain20 receive",
                   "removing one block costs at most 1.25 points", "epochs: 2"):
        assert needle in text, needle
