"""The task of a run's data: what the engine learns (see :mod:`resnetlab.engine.task`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from resnetlab.engine.task import Classification, Regression, Task

__all__ = ["task_of"]


def task_of(meta: dict[str, Any], num_classes: int, classes: Sequence[str] = ()) -> Task:
    """A :class:`Regression` for a regression table (``meta``: a bundle's or checkpoint's data
    meta, whose ``table`` holds the target's mean and standard deviation), else a
    :class:`Classification` of ``num_classes``."""
    if meta.get("task") == "regression":
        table = meta["table"]
        return Regression(target_std=float(table["target_std"]),
                          target_mean=float(table.get("target_mean", 0.0)))
    return Classification(num_classes, tuple(classes))
