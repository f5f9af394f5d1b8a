"""analysis.plots: figures are written, readable PNGs; bad input is a one-line DataError."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from PIL import Image

from resnetlab.analysis import plot_confusion, plot_curves, read_metrics
from resnetlab.utils.errors import DataError

# The engine's metrics.csv columns (resnetlab.engine.logging.EPOCH_COLUMNS).
COLUMNS = ["epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
           "nonfinite_steps", "images_per_s", "epoch_time_s", "elapsed_s"]


def write_metrics(path, epochs=4, val=True):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for e in range(1, epochs + 1):
            writer.writerow({"epoch": e, "step": 100 * e, "lr": 0.1 / e, "train_loss": 2.0 / e,
                             "train_top1": 1 - 0.5 / e, "val_loss": 2.1 / e if val else "",
                             "val_top1": 1 - 0.6 / e if val else "", "val_top5": 0.99 if val else "",
                             "nonfinite_steps": 0, "images_per_s": 1500.0,
                             "epoch_time_s": 30.0, "elapsed_s": 30.0 * e})
    return path


def png_size(path):
    with Image.open(path) as img:
        img.verify()  # raises on a truncated or non-PNG file
    with Image.open(path) as img:
        return img.format, img.size


def test_curves_from_metrics_csv(tmp_path):
    out = plot_curves(write_metrics(tmp_path / "metrics.csv"), tmp_path / "curves.png", title="run")
    assert out == tmp_path / "curves.png"
    fmt, (w, h) = png_size(out)
    assert fmt == "PNG" and w > h > 100  # three panels side by side (loss, accuracy, lr)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_curves_without_validation_columns(tmp_path):
    rows = read_metrics(write_metrics(tmp_path / "m.csv", epochs=1, val=False))
    assert rows[0]["train_loss"] == pytest.approx(2.0)
    assert rows[0]["val_loss"] != rows[0]["val_loss"]  # empty cell -> NaN
    assert png_size(plot_curves(rows, tmp_path / "c.png"))[0] == "PNG"


def test_curves_of_an_empty_table_name_the_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(DataError, match="metrics.csv: no rows"):
        plot_curves(path, tmp_path / "c.png")
    with pytest.raises(DataError, match="no such metrics file"):
        plot_curves(tmp_path / "missing.csv", tmp_path / "c.png")


@pytest.mark.parametrize("n, normalize", [(3, True), (10, False), (60, True)])
def test_confusion_png(tmp_path, n, normalize):
    matrix = [[(50 if i == j else (i + j) % 4) for j in range(n)] for i in range(n)]
    matrix[0] = [0] * n  # a class with no samples must not divide by zero
    out = plot_confusion(matrix, [f"class {i}" for i in range(n)], tmp_path / "confusion.png",
                         normalize=normalize)
    fmt, (w, h) = png_size(out)
    assert fmt == "PNG" and min(w, h) > 300
    assert out.stat().st_size > 5_000


def test_confusion_accepts_tensors_and_rejects_bad_shapes(tmp_path):
    torch = pytest.importorskip("torch")
    plot_confusion(torch.eye(4, dtype=torch.int64) * 7, None, tmp_path / "c.png")
    with pytest.raises(DataError, match="square"):
        plot_confusion([[1, 2, 3], [4, 5, 6]], None, tmp_path / "bad.png")
    with pytest.raises(DataError, match="2 class names for a 3x3"):
        plot_confusion(torch.eye(3), ["a", "b"], tmp_path / "bad.png")


def test_importing_analysis_does_not_import_matplotlib():
    code = ("import sys, resnetlab.analysis, resnetlab.cli.app; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plots_leave_the_global_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    plot_confusion([[1, 0], [0, 1]], ["a", "b"], tmp_path / "c.png")
    assert matplotlib.get_backend() == before
    assert "matplotlib.pyplot" not in sys.modules or not __import__(
        "matplotlib.pyplot").pyplot.get_fignums()
