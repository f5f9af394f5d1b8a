"""Regression on tables (issue 11): a numeric target is detected (or forced with --task), trained
with MSE on the standardised target, beats predicting the mean on held-out rows (R^2 > 0), and
eval / predict report in target units."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import build, cli
from resnetlab import run
from resnetlab.data.readers.table import read_csv
from resnetlab.data.tables import resolve_task
from resnetlab.utils.errors import DataError

HEADER = ["x1", "x2", "colour", "y"]


def make_rows(n: int, seed: int) -> list[list[str]]:
    """y = 30 x1 - 20 x2^2 + 25 [colour == red] + 100 + noise (sd 5): in target units far from 0
    and 1, so a missing mapping back from the standardised scale shows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    colour = rng.choice(["red", "green", "blue"], size=n)
    y = 30 * x[:, 0] - 20 * x[:, 1] ** 2 + 25 * (colour == "red") + 100 + rng.normal(0, 5, n)
    return [[f"{a:.4f}", f"{b:.4f}", c, f"{t:.3f}"]
            for (a, b), c, t in zip(x, colour, y, strict=True)]


def write(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in [HEADER, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("regression")
    train_csv, test_csv = write(root / "train.csv", make_rows(400, 0)), write(root / "test.csv", make_rows(150, 1))
    cfg = run.load_recipe("default")
    cfg.model.name = "mlp_resnet"
    cfg.data.name, cfg.data.target, cfg.data.batch_size = f"csv:{train_csv}", "y", 32
    cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay = "adamw", 0.003, 0.01
    cfg.train.epochs, cfg.train.device, cfg.train.precision = 10, "cpu", "fp32"
    cfg.train.tta, cfg.train.seed = False, 0
    cfg.runs_dir, cfg.name = str(root / "runs"), "reg"
    return run.train(cfg, progress=False), test_csv


def test_numeric_target_with_many_values_is_a_regression(tmp_path):
    path = write(tmp_path / "t.csv", make_rows(60, 0))
    table = read_csv(path)
    assert resolve_task(table, "y", None) == "regression"
    assert resolve_task(table, "y", "classification") == "classification"
    codes = tmp_path / "c.csv"
    codes.write_text("x,label\n" + "".join(f"{i},{i % 3}\n" for i in range(60)))
    assert resolve_task(read_csv(codes), "label", None) == "classification"  # 3 integer codes
    bundle = build(f"csv:{path}", target="y")
    assert bundle.num_classes == 1 and bundle.meta["task"] == "regression"
    x, y = next(iter(bundle.train))
    assert y.dtype.is_floating_point and abs(float(y.mean())) < 1.0  # standardised


def test_regression_beats_the_mean_and_reports_rmse_r2(trained):
    result, test_csv = trained
    res = json.loads((result.run_dir / "results.json").read_text())
    assert res["task"] == "regression" and res["metric"] == "val_rmse"
    assert res["r2"] > 0.5 and 0 < res["rmse"] < 40  # the target's sd is about 42
    header = (result.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_rmse", "val_rmse", "val_r2"} <= set(header)
    report, _ = run.evaluate(result.run_dir, f"csv:{test_csv}", device="cpu")
    assert report.num_samples == 150 and report.top1 is None
    assert report.r2 > 0.5 and 0 < report.rmse < 40  # held-out rows: better than their mean


def test_predict_prints_values_in_target_units(trained, capsys):
    result, test_csv = trained
    code, out, err = cli(capsys, "predict", result.run_dir, test_csv, "--runtime", "torch",
                         "--device", "cpu", "--json")
    assert code == 0, err
    rows = json.loads(out)
    truth = np.array([float(r[3]) for r in make_rows(150, 1)])
    values = np.array([r["value"] for r in rows])
    assert len(rows) == 150 and rows[0]["target"] == "y"
    assert np.sqrt(np.mean((values - truth) ** 2)) < 40  # target units, not the standardised scale


def test_a_text_cell_in_a_regression_target_names_the_row(tmp_path):
    rows = make_rows(60, 0)
    rows[7][3] = "lots"
    path = write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"t.csv row 9, column 'y': 'lots' is not a number"):
        build(f"csv:{path}", target="y", task="regression")
