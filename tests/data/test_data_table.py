"""CSV tables: standardisation fitted on training rows only, categorical encodings, bad cells."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import build
from resnetlab.data import preprocess_inputs
from resnetlab.utils.errors import ConfigError, DataError

HEADER = "age,city,income,label\n"


def write_csv(path, rows, header=HEADER):
    path.write_text(header + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(int(rng.integers(18, 90)), ["paris", "rome", "oslo"][i % 3],
             round(float(rng.normal(3e4, 1e4)), 2), "yes" if i % 4 else "no") for i in range(40)]
    return write_csv(tmp_path / "people.csv", rows), rows


def test_round_trip_statistics_from_training_rows_only(table):
    path, rows = table
    bundle = build(f"csv:{path}", target="label", val_size=8, batch_size=64, seed=0)
    meta = json.loads(json.dumps(bundle.meta))  # JSON-serialisable
    assert meta["kind"] == "table" and bundle.classes == ["no", "yes"]
    assert bundle.input_shape == (2 + 3,)  # age, income, city one-hot (3)
    assert meta["table"]["feature_names"] == ["age", "income", "city=oslo", "city=paris",
                                              "city=rome"]
    x, y = next(iter(bundle.train))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(x) == 32  # all 32 rows
    # standardised with train statistics: train features have mean 0, std 1
    torch.testing.assert_close(x[:, :2].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(x[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-5, rtol=0)
    ages = np.array([r[0] for r in rows], dtype=float)
    val_x = torch.cat([xb for xb, _ in bundle.val])
    assert not np.isclose(meta["table"]["numeric"][0]["mean"], ages.mean())  # train only
    assert (val_x[:, 2:].sum(1) == 1).all()  # exactly one city


def test_split_is_stratified_and_fixed_by_split_seed(table):
    path, _ = table
    a = build(f"csv:{path}", target="label", val_size=8, seed=0)
    b = build(f"csv:{path}", target="label", val_size=8, seed=5)
    va, vb = (torch.cat([x for x, _ in d.val]) for d in (a, b))
    assert torch.equal(va, vb)  # another training seed, the same validation rows
    labels = torch.cat([y for _, y in a.val])
    assert labels.tolist().count(0) == 2  # 10 "no" of 40 -> 2 of 8
    c = build(f"csv:{path}", target="label", val_size=8, split_seed=1)
    assert not torch.equal(va, torch.cat([x for x, _ in c.val]))


def test_embed_encoding_and_unseen_categories(table, tmp_path):
    path, _ = table
    bundle = build(f"csv:{path}", target="label", encoding="embed", categorical=["age"])
    meta = bundle.meta["table"]
    assert meta["feature_names"] == ["income", "age", "city"]
    assert meta["embed_columns"][1] == {"name": "city", "index": 2, "cardinality": 4}
    new = write_csv(tmp_path / "new.csv", [(30, "lima", 1000.0, "yes")])
    x, labels = preprocess_inputs([new], bundle.meta)
    assert x[0, 2].item() == 3  # unseen city -> the reserved slot
    assert labels == [f"{new}:row 2"]


def test_prediction_rows_match_training_features(table):
    path, _ = table
    bundle = build(f"csv:{path}", target="label", val_size=8, eval_batch_size=3)
    x, labels = preprocess_inputs([path], bundle.meta)
    assert x.shape == (40, 5) and labels[0].endswith("people.csv:row 2")
    val = torch.cat([xb for xb, _ in bundle.val])
    assert all(any(torch.equal(v, row) for row in x) for v in val)


@pytest.mark.parametrize("cell,message", [
    ("inf", r"row 5, column 'income': inf is not a finite number"),
    ("abc", r"row 5, column 'income': 'abc' is not a number in a numeric column"),
])  # empty / NA / nan cells are missing values (filled with the mean): tests/data/test_tables.py
def test_bad_numeric_cells_name_row_and_column(tmp_path, cell, message):
    rows = [(20 + i, "a", 100.0 + i, i % 2) for i in range(6)]
    rows[3] = (23, "a", cell, 1)  # file row 5 (header is row 1)
    path = write_csv(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"t\.csv " + message):
        build(f"csv:{path}", target="label")


def test_table_errors(tmp_path, table):
    path, _ = table
    with pytest.raises(ConfigError, match=r"needs --target COLUMN \(columns: age, city"):
        build(f"csv:{path}")
    with pytest.raises(DataError, match=r"no column 'price'"):
        build(f"csv:{path}", target="price")
    # tables are never augmented: an image recipe's augmentation is dropped and noted
    dropped = build(f"csv:{path}", target="label", augment="crop:2")
    assert dropped.meta["augment"] == "none" and dropped.meta["augment_dropped"] == "crop:2"
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(HEADER + "1,a,2,yes\n1,a,yes\n")
    with pytest.raises(DataError, match=r"ragged\.csv row 3: 3 cells but the header has 4"):
        build(f"csv:{ragged}", target="label")
    empty = write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(DataError, match=r"empty\.csv: empty data set"):
        build(f"csv:{empty}", target="label")
    missing_target = write_csv(tmp_path / "mt.csv", [(1, "a", 2, "yes"), (1, "a", 2, "")])
    with pytest.raises(DataError, match=r"mt\.csv row 3, column 'label': empty target"):
        build(f"csv:{missing_target}", target="label")


def test_separate_validation_csv_and_unknown_class(tmp_path, table):
    path, _ = table
    val = write_csv(tmp_path / "val.csv", [(40, "rome", 2e4, "yes"), (50, "oslo", 3e4, "no")])
    bundle = build(f"csv:{path}", target="label", val_dir=val, train_size=10)
    assert bundle.val.num_samples == 2 and bundle.train.num_samples == 10
    bad = write_csv(tmp_path / "bad.csv", [(40, "rome", 2e4, "maybe")])
    with pytest.raises(DataError, match=r"bad\.csv row 2, column 'label': target 'maybe'"):
        build(f"csv:{path}", target="label", val_dir=bad)
