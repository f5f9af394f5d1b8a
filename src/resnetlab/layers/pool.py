"""Pooling: windowed max/avg pooling for stems and downsampling, global pooling for heads."""

from __future__ import annotations

import torch
from torch import nn

from resnetlab.layers.checks import check_choice

__all__ = ["POOL_TYPES", "create_pool2d", "GlobalPool"]

POOL_TYPES = ("avg", "max")


def create_pool2d(pool_type: str, kernel_size: int, stride: int | None = None,
                  padding: int = 0) -> nn.Module:
    """A ``kernel_size`` window max or average pool (``stride`` defaults to the window)."""
    check_choice("pool_type", pool_type, POOL_TYPES)
    if pool_type == "max":
        return nn.MaxPool2d(kernel_size, stride, padding)
    # Padding must not dilute averages at the border.
    return nn.AvgPool2d(kernel_size, stride, padding, count_include_pad=False)


class GlobalPool(nn.Module):
    """Global spatial pooling ``(N, C, H, W) -> (N, C)``: ``"avg"``, ``"max"`` or ``"avgmax"``
    (the mean of both).  A reduction rather than an adaptive-pool layer, so it is cheap in
    channels_last and for any input size."""

    def __init__(self, pool_type: str = "avg"):
        super().__init__()
        self.pool_type = check_choice("global_pool", pool_type, (*POOL_TYPES, "avgmax"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return x.mean((2, 3))
        if self.pool_type == "max":
            return x.amax((2, 3))
        return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"
