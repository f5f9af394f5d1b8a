"""Exponential moving average of model weights (Polyak & Juditsky 1992)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma:
    """A frozen copy of ``model`` whose parameters track ``decay``-weighted averages.

    Parameters are averaged; buffers (BatchNorm running statistics) are copied, because they
    are already running averages.  The effective decay warms up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's ExponentialMovingAverage
    with ``num_updates``), so early averages are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._bind(model)

    def _bind(self, model: nn.Module) -> None:
        ema_p = dict(self.module.named_parameters())
        pairs = [(ema_p[n], p) for n, p in model.named_parameters() if p.is_floating_point()]
        self._avg = [a for a, _ in pairs], [p for _, p in pairs]
        ema_b = dict(self.module.named_buffers())
        bufs = [(ema_b[n], b) for n, b in model.named_buffers() if n in ema_b]
        self._copy = [a for a, _ in bufs], [b for _, b in bufs]

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """One averaging step towards the live model's current weights (one fused kernel)."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        if self._avg[0]:
            torch._foreach_lerp_(self._avg[0], self._avg[1], weight)
        if self._copy[0]:
            torch._foreach_copy_(self._copy[0], self._copy[1])

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "decay": self.decay, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])
