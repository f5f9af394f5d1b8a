"""The task of a run's data: what the engine learns (see :mod:`resnetlab.engine.task`, where
:func:`task_of` lives so that the predictor below ``run/`` uses the same one)."""

from __future__ import annotations

from resnetlab.engine.task import task_of

__all__ = ["task_of"]
