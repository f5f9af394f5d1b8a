"""Item 6 of issue 22: int8 calibration and its reported score see the inputs the exported model
sees: normalised with the run's saved mean/std, not statistics recomputed from the data (they
differ for --train-size runs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.deploy.export import data_meta_for, real_batches


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                tmp_path / "f" / c / f"{i}.png")
    return tmp_path / "f"


@pytest.mark.parametrize("split", ["train", "val"])
def test_real_batches_use_the_runs_mean_and_std(folder, split):
    data = data_meta_for(f"folder:{folder}")
    run = {**data, "mean": [m + 0.1 for m in data["mean"]], "std": [s * 2 for s in data["std"]]}
    (x_data, y_data), = real_batches(data, split, 64)
    (x_run, y_run), = real_batches(run, split, 64)
    assert torch.equal(y_data, y_run)
    raw = x_data * torch.tensor(data["std"]).view(-1, 1, 1) + torch.tensor(data["mean"]).view(-1, 1, 1)
    want = (raw - torch.tensor(run["mean"]).view(-1, 1, 1)) / torch.tensor(run["std"]).view(-1, 1, 1)
    torch.testing.assert_close(x_run, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(x_run, x_data)
