"""MLP-ResNets on tables (issue 11): a small CSV with numeric and categorical columns and a few
missing cells trains through the run API, beats the majority class on a held-out file scored
with ``evaluate`` (which uses the run's target column and statistics), and bad input is one line.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import build, cli, one_line_error
from resnetlab import run
from resnetlab.models import create_model
from resnetlab.models.mlp import table_defaults
from resnetlab.utils.errors import DataError

HEADER = ["x1", "x2", "colour", "label"]


def make_rows(n: int, seed: int) -> list[list[str]]:
    """label = x1 + x2 + 1.5 [colour == red] > 0.7 (about 40/60), with 2% missing cells."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    colour = rng.choice(["red", "green", "blue"], size=n)
    label = (x[:, 0] + x[:, 1] + 1.5 * (colour == "red") > 0.7)
    rows = [[f"{a:.4f}", f"{b:.4f}", c, "yes" if y else "no"]
            for (a, b), c, y in zip(x, colour, label, strict=True)]
    for i in rng.choice(n, size=max(1, n // 50), replace=False):
        rows[i][int(rng.integers(0, 3))] = ["", "NA", "?"][i % 3]
    return rows


def write(path: Path, rows: list[list[str]], header=HEADER) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def config(train_csv: Path, runs: Path, name: str, **data) -> run.RunConfig:
    cfg = run.load_recipe("default")
    cfg.model.name = "mlp_resnet"
    cfg.data.name, cfg.data.target, cfg.data.batch_size = f"csv:{train_csv}", "label", 32
    for key, value in data.items():
        setattr(cfg.data, key, value)
    cfg.optim.lr = 0.05
    cfg.train.epochs, cfg.train.device, cfg.train.precision = 8, "cpu", "fp32"
    cfg.train.tta, cfg.train.seed = False, 0
    cfg.runs_dir, cfg.name = str(runs), name
    return cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tables")
    return write(root / "train.csv", make_rows(400, 0)), write(root / "test.csv", make_rows(200, 1))


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory) -> run.Run:
    return run.train(config(files[0], tmp_path_factory.mktemp("runs"), "table"), progress=False)


def test_mlp_resnet_beats_the_majority_class_on_a_held_out_file(trained, files):
    labels = [row[3] for row in make_rows(200, 1)]
    majority = max(labels.count("yes"), labels.count("no")) / len(labels)
    report, _ = run.evaluate(trained, data=f"csv:{files[1]}")  # no --target: the run's
    assert report.num_samples == 200
    assert report.top1 > majority + 0.15, (report.top1, majority)
    # table-sized defaults, not the 9M-parameter image default
    args = trained.config.model.kwargs or {}
    assert "width" not in args
    net = create_model("mlp_resnet", in_features=5, num_classes=2, **table_defaults(360))
    assert sum(p.numel() for p in net.parameters()) < 100_000


def test_missing_cells_get_the_training_mean_and_their_own_category(tmp_path):
    rows = [[str(i), str(2 * i), "a" if i % 2 else "b", str(i % 2)] for i in range(10)]
    rows[3][0], rows[4][2] = "NA", ""
    bundle = build(f"csv:{write(tmp_path / 't.csv', rows)}", target="label", val_size=0)
    meta = bundle.meta["table"]
    assert meta["categorical"][0]["categories"] == ["(missing)", "a", "b"]
    x = torch.cat([xb for xb, _ in bundle.train])
    assert (x[:, 0] == 0).sum() >= 1  # the NA row sits at the (standardised) mean
    assert meta["numeric"][0]["mean"] == pytest.approx(np.mean([0, 1, 2, 4, 5, 6, 7, 8, 9]))


def test_embed_encoding_trains_with_embeddings(files, tmp_path):
    cfg = config(files[0], tmp_path, "embed", encoding="embed")
    cfg.train.epochs = 2
    done = run.train(cfg, progress=False)
    net = run.evaluate(done, data=f"csv:{files[1]}")[0]
    assert net.num_samples == 200
    from resnetlab.deploy import load_model
    loaded = load_model(str(done.run_dir))
    assert loaded.build_args["embed_columns"] == [[2, 4]]  # colour: 3 seen + the unseen slot
    assert loaded.model.embed.tables[0].num_embeddings == 4


def test_bad_tables_are_one_line(trained, files, tmp_path, capsys):
    no_target = write(tmp_path / "nt.csv", [r[:3] for r in make_rows(5, 2)], HEADER[:3])
    code, _, err = cli(capsys, "eval", trained.run_dir, "--data", f"csv:{no_target}")
    line = one_line_error(err)
    assert code == 2 and "no column 'label' (columns: x1, x2, colour)" in line
    rows = make_rows(20, 3)
    rows[6][1] = "lots"
    bad = write(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=r"bad\.csv row 8, column 'x2': 'lots' is not a number"):
        build(f"csv:{bad}", target="label")
    empty = write(tmp_path / "empty.csv", [])
    code, _, err = cli(capsys, "train", "--model", "mlp_resnet", "--data", f"csv:{empty}",
                       "--target", "label", "--runs-dir", tmp_path / "r")
    assert code == 2 and "empty data set" in one_line_error(err)


def test_an_explicit_image_augment_for_a_table_is_one_line(files, tmp_path, capsys):
    """The recipe's flip is dropped silently for tables, but a typed --augment is refused."""
    code, _, err = cli(capsys, "train", "--model", "mlp_resnet", "--data", f"csv:{files[0]}",
                       "--target", "label", "--augment", "flip", "--runs-dir", tmp_path / "runs")
    assert code == 2
    assert "--augment flip" in one_line_error(err) and "table" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
