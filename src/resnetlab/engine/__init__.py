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
* Run-directory files: ``metrics.csv``/``.jsonl`` (one row per epoch), ``steps.csv``/``.jsonl``
  (every ``log_every`` steps), ``config.yaml``, ``checkpoints/{last,best}``, ``tb/``; the
  columns are documented in :mod:`resnetlab.engine.logging`.
* torchrun: every rank builds the same loaders with the same seed; ``fit`` shards batches by
  rank (see :mod:`resnetlab.engine.distributed`).  Call ``distributed.init_distributed``
  first and ``distributed.cleanup`` at the end; create the run directory on rank 0 and share
  it with ``distributed.broadcast_object``.
"""

from resnetlab.engine.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
)
from resnetlab.engine.ema import ModelEma
from resnetlab.engine.guard import TrainingDiverged
from resnetlab.engine.logging import EPOCH_COLUMNS, STEP_COLUMNS, read_metrics
from resnetlab.engine.loop import FitResult, evaluate, fit, train_epoch
from resnetlab.engine.metrics import EvalResult
from resnetlab.engine.optim import build_optimizer, param_groups
from resnetlab.engine.rundir import new_run_dir
from resnetlab.engine.runtime import Runtime, prepare_runtime
from resnetlab.engine.schedules import lr_schedule
from resnetlab.engine.session import TrainSession, epoch_batches, open_session, steps_per_epoch
from resnetlab.engine.tracker import Tracker, pick_metric

__all__ = [
    "RunConfig", "ModelConfig", "DataConfig", "OptimConfig", "ScheduleConfig", "TrainConfig",
    "apply_overrides", "build_optimizer", "param_groups", "lr_schedule", "evaluate", "EvalResult",
    "fit", "FitResult", "new_run_dir", "TrainingDiverged", "ModelEma", "Runtime",
    "prepare_runtime", "epoch_batches", "read_metrics", "EPOCH_COLUMNS", "STEP_COLUMNS",
    "train_epoch", "TrainSession", "open_session", "steps_per_epoch", "Tracker", "pick_metric",
]
