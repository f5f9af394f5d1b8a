"""Issue 23: the MLP-ResNet's blocks are purely residual, so depth works.

A 32-block MLP-ResNet and its plain twin (the same 65 Dense layers, no additions) train with
the same data, steps, seed and optimiser on scikit-learn's digits table (1797 rows, 64
features, bundled offline).  The residual network's loss falls; the plain one stays at chance.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import resnetlab
from resnetlab.models import DenseBlock, DenseResidualBlock, count_parameters

SMALL = {"width": 64, "bottleneck_width": 32, "drop_rate": 0.0}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _running_loss(name: str, x: torch.Tensor, y: torch.Tensor, steps: int = 60) -> float:
    """Mean training loss over the last 10 of ``steps`` SGD steps (batches of 128, seed 0)."""
    torch.manual_seed(0)
    model = resnetlab.create_model(name, in_features=64, num_classes=10, num_blocks=32, **SMALL)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        i = torch.randint(0, len(x), (128,), generator=batches)
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[-10:]) / 10


def test_a_32_block_mlp_resnet_trains_where_its_plain_twin_does_not(digits):
    torch.set_num_threads(1)  # the shared machine; also makes the numbers repeatable
    residual = _running_loss("mlp_resnet", *digits)
    plain = _running_loss("plain_mlp", *digits)
    chance = math.log(10)
    assert residual < plain - 1.0, (residual, plain)
    assert residual < 0.5 * chance  # it learns, not merely "less badly"
    assert plain > 0.8 * chance  # the twin is the failure the comparison is about


@pytest.mark.parametrize("blocks", [1, 8, 32])
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_plain_twin_has_exactly_the_same_parameters(blocks, shortcut):
    kw = dict(in_features=30, num_classes=2, num_blocks=blocks, shortcut=shortcut, **SMALL)
    res = resnetlab.create_model("mlp_resnet", **kw)
    plain = resnetlab.create_model("plain_mlp", **kw)
    assert count_parameters(res) == count_parameters(plain)
    assert [n for n, _ in res.named_parameters()] == [n for n, _ in plain.named_parameters()]


def test_only_the_stem_dense_sits_outside_the_skips():
    model = resnetlab.create_model("mlp_resnet", in_features=30, num_classes=3, num_blocks=4,
                                   **SMALL)
    outside = [n for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and not n.startswith(("layer1.", "fc"))]
    assert outside == ["stem.0"]
    for block in model.blocks():  # every block maps width -> width and adds its input back
        assert isinstance(block, DenseBlock) and not hasattr(block, "fc_in")
        assert block.fc1.in_features == block.fc2.out_features == 64


@pytest.mark.parametrize("name", ["mlp_resnet", "plain_mlp"])
def test_shapes(name):
    model = resnetlab.create_model(name, in_features=30, num_classes=3, num_blocks=32, **SMALL)
    x = torch.randn(5, 30)
    assert model(x).shape == (5, 3)
    assert model.forward_features(x).shape == (5, 64)
    assert len(model.blocks()) == 32
    images = resnetlab.create_model(name, num_blocks=2, **SMALL)  # 784 inputs: 28x28 images
    assert images(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_the_seed_block_is_the_explainers_figure():
    """Dense(1024) first, then one residual block: a stem and a DenseBlock in one module."""
    seed = DenseResidualBlock(30, 1024, 512)
    assert seed(torch.randn(4, 30)).shape == (4, 1024)
    assert seed.fc_in.in_features == 30 and seed.fc_in.out_features == 1024
    stem_params = 30 * 1024 + 2 * 1024  # Dense without bias (a BN follows) + BN scale/shift
    assert count_parameters(seed) == stem_params + count_parameters(DenseBlock(1024, 512))
    assert "explainer" in DenseResidualBlock.__doc__


def test_an_old_mlp_resnet_state_dict_is_refused_with_the_reason():
    from resnetlab.checkpoint import state_mismatch

    new = resnetlab.create_model("mlp_resnet", in_features=30, num_classes=3, num_blocks=2, **SMALL)
    old = dict(new.state_dict())
    old["layer1.0.fc_in.weight"] = torch.zeros(64, 64)  # the pre-issue-23 per-block input Dense
    old["layer1.0.norm_in.weight"] = torch.ones(64)
    problem = state_mismatch(new.state_dict(), old)
    assert "unexpected layer1.0.fc_in.weight" in problem and "retrain it" in problem
    assert state_mismatch(new.state_dict(), dict(new.state_dict())) == ""
