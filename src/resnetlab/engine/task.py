"""What is being learned: a :class:`Classification` or a :class:`Regression`.

A task owns what differs between the two: the loss, the evaluation meter and its metrics, the
units of the outputs and how one prediction prints.  The loop, the evaluation and the run API
take a task instead of branching on a regression's target standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.engine.metrics import ClassificationMeter, RegressionMeter, smoothed_nll
from resnetlab.utils.device import autocast

__all__ = ["Task", "Classification", "Regression"]

# metrics.csv columns that are accuracies: a regression has none
_ACCURACY = ("val_top1", "val_top5", "train_top1")


class Task:
    """The interface of a task (see :class:`Classification`, :class:`Regression`)."""

    name = "task"
    num_classes = 1
    regression = False

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def meter(self, device: torch.device) -> Any:
        raise NotImplementedError

    def metric(self, name: str) -> str:
        """The metrics.csv column that picks the best checkpoint when ``name`` is asked for."""
        return name

    def epoch_metrics(self, train_loss: float, val: Any) -> dict[str, Any]:
        """Columns of an epoch row beyond loss and accuracy."""
        return {}

    def show(self, value: float) -> str:
        """One prediction as the user reads it."""
        raise NotImplementedError


@dataclass(frozen=True)
class Classification(Task):
    """``num_classes`` classes; cross-entropy (with label smoothing), top-1/top-5 accuracy."""

    num_classes: int = 2
    classes: tuple[str, ...] = ()
    name = "classification"

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(out, y, label_smoothing=label_smoothing)

    def meter(self, device: torch.device) -> ClassificationMeter:
        return ClassificationMeter(self.num_classes, device)

    def show(self, value: float) -> str:
        index = int(value)
        return self.classes[index] if index < len(self.classes) else str(index)


@dataclass(frozen=True)
class Regression(Task):
    """One standardised float target: MSE loss; RMSE in target units (x ``target_std``) and R^2."""

    target_std: float = 1.0
    target_mean: float = 0.0
    name = "regression"
    regression = True

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.mse_loss(out.float().reshape(y.shape), y)

    def meter(self, device: torch.device) -> RegressionMeter:
        return RegressionMeter(self.target_std, device)

    def metric(self, name: str) -> str:
        return "val_rmse" if name in _ACCURACY else name  # no accuracy: lower RMSE is better

    def epoch_metrics(self, train_loss: float, val: Any) -> dict[str, Any]:
        return {"train_top1": None, "val_top1": None, "val_top5": None,
                "train_rmse": math.sqrt(train_loss) * self.target_std,
                "val_rmse": val.rmse if val else None, "val_r2": val.r2 if val else None}

    def to_units(self, standardised: float) -> float:
        """A network output (standardised) in target units."""
        return standardised * self.target_std + self.target_mean

    def show(self, value: float) -> str:
        return f"{self.to_units(value):.6g}"


def evaluate_batch(task: Task, model: nn.Module, x: torch.Tensor, y: torch.Tensor, meter: Any,
                   rt: Any, tta: Callable[[torch.Tensor], Iterable[torch.Tensor]] | None,
                   label_smoothing: float) -> None:
    """Add one batch to ``meter``: log-probabilities (averaged over ``tta`` views) for a
    classification, standardised predictions for a regression."""
    if task.regression:
        with autocast(rt.device, rt.dtype):
            pred = model(x).float().reshape(y.shape)
        meter.update(pred, y, ((pred - y) ** 2).sum())
        return
    with autocast(rt.device, rt.dtype):
        if tta is None:
            log_probs = model(x).float().log_softmax(dim=1)
        else:
            views = list(tta(x))
            probs = sum(model(v).float().softmax(dim=1) for v in views) / len(views)
            log_probs = probs.clamp_min(torch.finfo(torch.float32).tiny).log()
    meter.update(log_probs, y, smoothed_nll(log_probs, y, label_smoothing))
