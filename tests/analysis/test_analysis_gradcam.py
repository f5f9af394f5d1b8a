"""Grad-CAM and saliency: on a network whose class evidence sits in one quadrant, the map
highlights that quadrant; names of stages and blocks resolve; a wrong name is one clear error."""

import pytest
import torch
from torch import nn

from resnetlab.analysis.gradcam import (
    explain,
    grad_cam,
    layer_names,
    per_class_indices,
    resolve_layer,
    saliency,
)
from resnetlab.models import create_model
from resnetlab.utils.errors import ConfigError

H = 16


class _Quadrants(nn.Module):
    """Class k's logit is the summed activation of feature channel k, and channel k sees only
    quadrant k (TL, TR, BL, BR) of the image, at half resolution (so upsampling is exercised)."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(4, H // 2, H // 2)
        h = H // 4
        for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            mask[k, r * h:(r + 1) * h, c * h:(c + 1) * h] = 1
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(1, 4, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.features = nn.ReLU()
        self.fc = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(4))

    def forward(self, x):
        a = self.features(nn.functional.avg_pool2d(self.conv(x), 2) * self.mask)
        return self.fc(a.sum((2, 3)))


def _quadrant_mass(maps: torch.Tensor) -> torch.Tensor:
    """Share of each map's mass per quadrant: (N, 4) in TL, TR, BL, BR order."""
    h = maps.shape[-1] // 2
    parts = [maps[:, :h, :h], maps[:, :h, h:], maps[:, h:, :h], maps[:, h:, h:]]
    mass = torch.stack([p.sum((1, 2)) for p in parts], 1)
    return mass / mass.sum(1, keepdim=True)


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_map_highlights_the_quadrant_holding_the_evidence(method):
    torch.manual_seed(0)
    x = torch.rand(4, 1, H, H) + 0.1
    target = torch.arange(4)
    model = _Quadrants()
    if method == "gradcam":
        maps, _ = grad_cam(model, x, "features", target)
    else:
        maps, _ = saliency(model, x, target)
    assert maps.shape == (4, H, H) and maps.min() >= 0 and maps.max() <= 1
    share = _quadrant_mass(maps)
    assert torch.equal(share.argmax(1), target)
    assert (share[torch.arange(4), target] > 0.9).all(), share


def test_predicted_class_by_default_and_batching():
    x = torch.zeros(3, 1, H, H)
    x[0, :, :H // 2, :H // 2] = 1   # evidence in TL only -> class 0
    x[1, :, H // 2:, H // 2:] = 1   # BR -> class 3
    x[2, :, :H // 2, H // 2:] = 1   # TR -> class 1
    maps, pred = explain(_Quadrants(), x, "gradcam", "features", batch_size=2)
    assert pred.tolist() == [0, 3, 1]
    assert _quadrant_mass(maps).argmax(1).tolist() == [0, 3, 1]


def test_resnet_stages_and_blocks_resolve():
    torch.manual_seed(0)
    model = create_model("resnet20", in_chans=1, num_classes=10, width_mult=0.5)
    assert resolve_layer(model, None)[0] == "layer3"
    assert resolve_layer(model, "layer2.1")[1] is model.layer2[1]
    assert {"stem", "layer1", "layer3", "layer3.2"} <= set(layer_names(model))
    x = torch.randn(5, 1, 28, 28)
    for layer in (None, "stem", "layer1.0"):
        maps, pred = grad_cam(model, x, layer)
        assert maps.shape == (5, 28, 28) and pred.shape == (5,)
        assert torch.isfinite(maps).all() and maps.max() <= 1
    with pytest.raises(ConfigError, match="--layer layer9"):
        resolve_layer(model, "layer9")


def test_per_class_indices():
    labels = torch.tensor([1, 0, 1, 2, 0, 1])
    assert per_class_indices(labels, 2, 3) == [1, 4, 0, 2, 3]
