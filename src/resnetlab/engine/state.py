"""Training position and random-number state, for exact resume."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

__all__ = ["TrainProgress", "rng_state", "set_rng_state", "match_param_layout"]


@dataclass
class TrainProgress:
    """Where a run is and what it has seen; saved in every ``last`` checkpoint.

    ``epoch`` is the epoch in progress (0-based) and ``batch`` the batches of it already
    trained on this rank, so ``loader.epoch(epoch, start=batch)`` continues exactly.
    ``elapsed_s``/``epoch_time_s`` are the run's :class:`~resnetlab.engine.clock.Clock`
    readings at the save (the clock keeps time; these carry it across a resume).
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    elapsed_s: float = 0.0
    epoch_time_s: float = 0.0
    epoch_loss_sum: float = 0.0
    epoch_correct: float = 0.0
    epoch_count: int = 0
    nonfinite_steps: int = 0
    best_metric: float | None = None
    best_epoch: float | None = None
    bad_epochs: int = 0
    finished: bool = False
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainProgress:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only when CUDA is present)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in state["cuda"]])


@torch.no_grad()
def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give optimiser state tensors their parameter's memory layout (e.g. channels_last).

    Checkpoints store contiguous tensors; a momentum buffer in another layout than its
    parameter would push the fused kernel onto its slow strided path.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
