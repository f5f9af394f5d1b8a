"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth")."""

from __future__ import annotations

import torch
from torch import nn

from resnetlab.layers.checks import check_rate

__all__ = ["drop_path", "DropPath", "stochastic_depth_rates"]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``p``.

    Survivors are scaled by 1/(1-p) during training (the "inverted" form of Huang et al.'s
    test-time scaling), so evaluation is the identity and needs no rescaling.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    # One Bernoulli draw per sample, broadcast over every other dimension.
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Module form of :func:`drop_path`.

    Residual blocks always own one (``p=0`` is a no-op), so the branch output has a stable place
    to hook: a forward hook on ``block.drop_path`` sees, and may replace, the branch output.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = check_rate("drop_path_rate", p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


def stochastic_depth_rates(rate: float, num_blocks: int) -> list[float]:
    """Per-block drop rates, linear in depth: block l of L drops with ``rate * l / L``.

    This is the "linear decay" rule of Huang et al. 2016 (sec. 3): the first block is almost
    always kept, the last one is dropped with probability ``rate``.
    """
    rate = check_rate("drop_path_rate", rate)
    return [rate * (i + 1) / num_blocks for i in range(num_blocks)]
