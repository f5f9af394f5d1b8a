"""The training engine: typed run configs, optimisers, schedules, the loop, evaluation.

The engine takes any ``nn.Module`` and any iterable of ``(x, y)`` batches; it never imports
``resnetlab.models`` or ``resnetlab.data``.  Whole runs (data + model + fit + final evaluation)
are assembled by :mod:`resnetlab.run`; this is the layer below it::

    cfg = RunConfig.from_yaml("my_recipe.yaml")
    run_dir = new_run_dir(cfg.runs_dir, cfg.name, model=cfg.model.name, data=cfg.data.name)
    result = fit(model, bundle.train, bundle.val, cfg, run_dir, num_classes=bundle.num_classes,
                 extra_meta={"model": model.build_args, "data": bundle.meta, "classes": bundle.classes},
                 tta=flip_tta if cfg.train.tta else None)
    test = evaluate(model, bundle.test, device=..., dtype=..., num_classes=bundle.num_classes)

Notes on the API agreed in the design brief (additions only, nothing renamed):

* ``new_run_dir(runs_dir, name=None, *, model="run", data=None)``: the default name
  ``<model>-<data>-<YYYYmmdd-HHMMSS>`` needs the model and data names, passed as keywords.
* ``TrainConfig.max_steps`` (smoke tests) and ``ScheduleConfig.warmup_frac`` /
  ``warmup_start_frac`` and ``OptimConfig.eps`` are extra fields.
* ``FitResult`` also has ``metric``, ``best_checkpoint`` and ``last_checkpoint``.
* ``evaluate(..., channels_last=False)`` is an extra keyword; ``fit`` raises
  :class:`TrainingDiverged` (a ``UserError``) when the loss stays NaN/inf.
* ``on_epoch_end(row)`` returning True stops training after that epoch.
* ``fit`` takes a :class:`~resnetlab.engine.plan.RunPlan` (``make_plan``: the run's checked,
  immutable numbers; what :mod:`resnetlab.run` passes) or a ``RunConfig``, which it checks
  and plans itself.
* Run-directory files: ``metrics.csv``/``.jsonl`` (one row per epoch), ``steps.csv``/``.jsonl``
  (every ``log_every`` steps), ``config.yaml``, ``checkpoints/{last,best}``, ``tb/``; the
  columns are documented in :mod:`resnetlab.engine.logging`.
* torchrun: every rank builds the same loaders with the same seed; ``fit`` shards batches by
  rank (see :mod:`resnetlab.engine.distributed`).  Call ``distributed.init_distributed``
  first and ``distributed.cleanup`` at the end; create the run directory on rank 0 and share
  it with ``distributed.broadcast_object``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that reading a config (``resnetlab.engine.config``, and with it
# ``resnetlab train --help``) does not import torch.
_WHERE = {
    "RunConfig": "config", "ModelConfig": "config", "DataConfig": "config", "OptimConfig": "config",
    "ScheduleConfig": "config", "TrainConfig": "config", "apply_overrides": "config",
    "ModelEma": "ema", "TrainingDiverged": "guard", "EPOCH_COLUMNS": "logging",
    "STEP_COLUMNS": "logging", "read_metrics": "logging", "FitResult": "loop", "evaluate": "loop",
    "fit": "loop", "train_epoch": "loop", "EvalResult": "metrics", "build_optimizer": "optim",
    "param_groups": "optim", "new_run_dir": "rundir", "Runtime": "runtime",
    "prepare_runtime": "runtime", "lr_schedule": "schedules", "TrainSession": "session",
    "epoch_batches": "session", "open_session": "session", "steps_per_epoch": "session",
    "Tracker": "tracker", "pick_metric": "tracker", "RunPlan": "plan", "make_plan": "plan",
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"resnetlab.engine.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'resnetlab.engine' has no attribute {name!r}")
