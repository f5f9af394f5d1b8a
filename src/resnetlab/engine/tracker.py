"""Best metric and early stopping: one small tracker whose state lives in the saved progress."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from resnetlab.engine.config import METRICS, TrainConfig
from resnetlab.engine.state import TrainProgress
from resnetlab.utils.errors import ConfigError

__all__ = ["METRICS", "Tracker", "pick_metric"]

_ACCURACY = ("val_top1", "val_top5", "train_top1")
_TRAIN_COUNTERPART = {"val_top5": "train_top1", "val_r2": "train_rmse"}


def pick_metric(tc: TrainConfig, has_val: bool, regression: bool = False) -> str:
    """The column that picks the best checkpoint: ``early_stop_metric``, or its training
    counterpart when there is no validation split (then early stopping is an error).

    A regression run has no accuracy: an accuracy metric (the default ``val_top1``) becomes
    ``val_rmse``, lower is better.
    """
    name = tc.early_stop_metric  # one of METRICS: the config's check (validate) said so
    if regression and name in _ACCURACY:
        name = "val_rmse"
    if name.startswith("val_") and not has_val:
        if tc.early_stop_patience:
            raise ConfigError(f"--early-stop needs a validation split to watch {name}; "
                              "set --val-size > 0 or --early-stop-metric train_loss")
        name = _TRAIN_COUNTERPART.get(name, name.replace("val_", "train_"))
    return name


@dataclass
class Tracker:
    """Which epoch is best by ``metric`` and whether ``patience`` epochs passed without one.

    The numbers (best value, its epoch, epochs since) are fields of :class:`TrainProgress`, so
    a resumed run continues them exactly.
    """

    metric: str
    patience: int | None = None

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric]

    def update(self, st: TrainProgress, row: dict[str, Any]) -> bool:
        """Record ``row``'s metric; True when it is the best so far."""
        value = row.get(self.metric)
        better = value is not None and math.isfinite(value) and (
            st.best_metric is None
            or (value > st.best_metric if self.higher_is_better else value < st.best_metric))
        if better:
            st.best_metric, st.best_epoch, st.bad_epochs = value, row["epoch"], 0
        else:
            st.bad_epochs += 1
        return better

    def exhausted(self, st: TrainProgress) -> bool:
        """``patience`` epochs in a row without a new best."""
        return bool(self.patience) and st.bad_epochs >= self.patience
