"""Item 14 of issue 22: ``--test-size N`` bounds the final test (a stratified, fixed subset of the
test split), so a smoke run is small end to end; results.json records it."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import TINY, cli, needs_fmnist, one_line_error
from resnetlab.data import BatchLoader, TensorSource
from resnetlab.data.loaders import bounded


def test_bounded_loader_is_stratified_and_fixed():
    y = torch.arange(100) % 4
    loader = BatchLoader(TensorSource(torch.arange(100.0)[:, None], y), batch_size=7, train=False)
    small = bounded(loader, 20, split_seed=0)
    xs, ys = zip(*small.epoch(0), strict=True)
    assert small.num_samples == 20 and torch.bincount(torch.cat(ys)).tolist() == [5] * 4
    again = torch.cat([x for x, _ in bounded(loader, 20, split_seed=0).epoch(0)])
    assert torch.equal(torch.cat(xs), again)
    assert bounded(loader, None, split_seed=0) is loader and bounded(loader, 500, 0) is loader


@needs_fmnist
def test_train_test_size_bounds_the_final_test(tmp_path, capsys):
    code, _, err = cli(capsys, "train", *TINY, "--max-steps", "2", "--test-size", "300",
                       "--runs-dir", tmp_path, "--name", "r")
    assert code == 0, err
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["num_samples"] == 300 and results["test_size"] == 300
    assert sum(sum(row) for row in results["confusion"]) == 300


@pytest.mark.parametrize("bad", ["0", "-5"])
def test_test_size_must_be_positive(tmp_path, capsys, bad):
    code, _, err = cli(capsys, "train", *TINY, "--test-size", bad, "--runs-dir", tmp_path)
    assert code == 2 and "--test-size" in one_line_error(err)
    assert not any(tmp_path.iterdir())
