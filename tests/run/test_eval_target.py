"""Item 12 of issue 22: ``eval`` takes ``--target`` for a CSV, as ``train`` does, and checks it
against the run's own target column."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import cli, one_line_error
from resnetlab import run


def _csv(path, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    label = np.where(x[:, 0] + x[:, 1] > 0, "up", "down")
    rows = ["a,b,other,label"] + [f"{a:.3f},{b:.3f},{'up' if a > 0 else 'down'},{c}"
                                  for (a, b), c in zip(x, label, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaltarget")
    cfg = run.load_recipe("default")
    cfg.model.name, cfg.data.name, cfg.data.target = "mlp_resnet", f"csv:{_csv(root / 't.csv', 200, 0)}", "label"
    cfg.model.kwargs = {"num_blocks": 1}
    cfg.train.epochs, cfg.train.device, cfg.train.precision, cfg.train.tta = 1, "cpu", "fp32", False
    cfg.runs_dir, cfg.name = str(root / "runs"), "t"
    return run.train(cfg, progress=False).run_dir, _csv(root / "held.csv", 60, 1)


def test_eval_accepts_the_runs_own_target(table_run, capsys):
    run_dir, held = table_run
    code, out, err = cli(capsys, "eval", run_dir, "--data", f"csv:{held}", "--target", "label",
                         "--json", "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)["num_samples"] == 60


def test_eval_refuses_another_target(table_run, capsys):
    run_dir, held = table_run
    code, _, err = cli(capsys, "eval", run_dir, "--data", f"csv:{held}", "--target", "other",
                       "--device", "cpu")
    line = one_line_error(err)
    assert code == 2 and "--target other" in line and "label" in line
