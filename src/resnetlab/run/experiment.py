"""Whole training runs: :func:`train` a config into a new run directory, :func:`resume` one.

This is the one place that assembles a run (data, network, :func:`~resnetlab.engine.fit`, the
final evaluation, ``results.json`` and the plots).  The CLI, the benchmarks and notebooks call
it; ``resnetlab train`` with the same config gives the same run directory as
``resnetlab.run.train(cfg)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnetlab.checkpoint import read_meta, resolve_checkpoint_dir
from resnetlab.engine import distributed, fit, new_run_dir
from resnetlab.engine.config import RunConfig, validate
from resnetlab.engine.loop import FitResult
from resnetlab.engine.plan import RunPlan, make_plan
from resnetlab.engine.rundir import lock_run_dir, made_by_job
from resnetlab.run.budget import apply_time_budget
from resnetlab.run.build import as_built, build_data_and_model, late_freeze_if_short
from resnetlab.run.launch import launch
from resnetlab.run.layout import record_layout
from resnetlab.run.outputs import final_results, write_outputs
from resnetlab.run.pretrained import Finetuning, prepare_finetune
from resnetlab.run.recipes import fresh_name, resume_config
from resnetlab.run.tasks import task_of
from resnetlab.utils.device import resolve_device
from resnetlab.utils.errors import ConfigError, UserError
from resnetlab.utils.notices import say

__all__ = ["Run", "Interrupted", "train", "resume", "TEST_ON"]

TEST_ON = ("best", "last")
# Called with each epoch's metrics row; returning True stops training after that epoch.
EpochHook = Callable[[dict[str, Any]], Any]


@dataclass
class Run:
    """A run directory and what it holds.

    ``results`` is ``results.json`` (None while the run is unfinished); ``fit`` is what this
    process trained (None for a run opened from disk or found finished by :func:`resume`).
    """

    run_dir: Path
    config: RunConfig
    results: dict[str, Any] | None = None
    fit: FitResult | None = None
    already_finished: bool = False

    @property
    def best(self) -> Path | None:
        """The best-on-validation checkpoint (what ``resnetlab eval RUN`` loads)."""
        return resolve_checkpoint_dir(self.run_dir / "checkpoints" / "best")

    @property
    def last(self) -> Path | None:
        """The latest checkpoint, with the training state :func:`resume` continues from."""
        return resolve_checkpoint_dir(self.run_dir / "checkpoints" / "last")

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> Run:
        """A run directory written earlier (by this API or ``resnetlab train``)."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir}: no config.yaml there (not a run directory)")
        results = run_dir / "results.json"
        return cls(run_dir, RunConfig.from_yaml(run_dir / "config.yaml"),
                   json.loads(results.read_text()) if results.is_file() else None)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``run_dir`` holds a checkpoint that :func:`resume` continues."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def train(config: RunConfig, *, test_on: str = "best", progress: bool | None = None,
          world_size: int = 1, max_restarts: int = 0, on_epoch_end: EpochHook | None = None,
          budget_from: float | None = None) -> Run:
    """Train ``config`` into a new run directory under ``config.runs_dir`` and evaluate it once.

    Everything the config asks for is checked (and the data read) before the directory is
    created, so a mistake leaves nothing behind.  ``test_on``: ``best`` (by validation) or
    ``last`` weights for the final evaluation.  ``progress``: None (a bar on a terminal),
    True or False.  Ctrl-C raises :class:`Interrupted` naming the directory to resume.
    ``world_size`` > 1 trains data-parallel on that many local processes (torchrun; the global
    batch is ``world_size`` x ``data.batch_size``); ``max_restarts``: torchrun restarts a
    failed job this often, each time resuming from the last complete checkpoint.
    ``on_epoch_end(row)`` sees each epoch's ``metrics.csv`` row (a dict) and stops training by
    returning True (a sweep's pruner); in-process runs only (not with ``world_size`` > 1).
    ``budget_from``: the ``time.perf_counter()`` reading ``train.time_budget`` counts from
    (default: this call); ``resnetlab train`` passes its own start, so the budget is the
    whole process's.
    """
    validate(config)
    _hook_in_process(on_epoch_end, world_size, max_restarts)
    if test_on not in TEST_ON:
        raise ConfigError(f"--test-on {test_on!r}: choose last or best")
    restarted = _restarted_run(config)
    if restarted is not None:
        return resume(restarted, test_on=test_on, progress=progress, on_epoch_end=on_epoch_end)
    if distributed.restart_count() == 0:  # a restart reuses the directory its attempt made
        fresh_name(config, named_by_flag=True)  # a taken name fails now, not after reading the data
    if world_size != 1 or max_restarts:
        try:
            made = launch(config, world_size, max_restarts=max_restarts, test_on=test_on,
                          progress=progress)
        except KeyboardInterrupt:
            raise Interrupted(Path(config.runs_dir) / str(config.name)) from None
        return _launched(made)
    return _execute(config, None, test_on, progress, on_epoch_end, budget_from)


def _hook_in_process(hook: EpochHook | None, world_size: int, max_restarts: int) -> None:
    if hook is not None and (world_size != 1 or max_restarts):
        raise ConfigError("on_epoch_end with --nproc/--max-restarts: the callback cannot reach "
                          "the launched processes; run in this process")


def _restarted_run(cfg: RunConfig) -> Path | None:
    """Under ``torchrun --max-restarts``: after a restart, the run the failed attempt started
    when it holds a checkpoint to continue from (else None: it starts afresh)."""
    if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0 and cfg.name is None:
        raise ConfigError("torchrun --max-restarts needs --name NAME: a restarted job finds its "
                          "run directory by name (resnetlab train --nproc N names it itself)")
    if distributed.restart_count() == 0:
        return None
    run_dir = Path(cfg.runs_dir) / str(cfg.name)
    found = (resolve_checkpoint_dir(run_dir / "checkpoints" / "last") is not None
             and made_by_job(run_dir))  # another job's run (or a user's folder) is not ours
    if found and distributed.is_main():
        say(f"torchrun restart {distributed.restart_count()}: resuming {run_dir}")
    return run_dir if found else None


def _launched(run_dir: Path) -> Run:
    run = Run.open(run_dir)
    if run.results is None:
        raise ConfigError(f"{run_dir}: the launched run ended without results.json")
    return run


def resume(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None, *,
           test_on: str = "best", progress: bool | None = None, world_size: int = 1,
           max_restarts: int = 0, on_epoch_end: EpochHook | None = None) -> Run:
    """Continue ``run_dir`` exactly where its last checkpoint left off, then evaluate it.

    ``overrides`` (dotted keys, e.g. ``{"train.epochs": 12}``) may change the schedule and the
    loop but not the model, the data or the seed.  A finished run (it has ``results.json``) is
    returned as it is, with ``already_finished=True``: nothing is trained or rewritten.
    ``world_size``/``max_restarts`` as in :func:`train`; the world size may differ from the
    run's (the position in the epoch is mapped, see ``distributed.map_batch``).
    ``on_epoch_end`` as in :func:`train`.
    """
    _hook_in_process(on_epoch_end, world_size, max_restarts)
    run_dir = Path(run_dir)
    overrides = dict(overrides or {})
    for key, flag in (("name", "--name"), ("runs_dir", "--runs-dir")):
        if key in overrides:
            raise ConfigError(f"{flag} with --resume {run_dir}: the run directory is {run_dir}")
    cfg, changes = resume_config(run_dir, overrides)
    if (run_dir / "results.json").is_file():
        found = Run.open(run_dir)
        found.already_finished = True
        return found
    if test_on not in TEST_ON:
        raise ConfigError(f"--test-on {test_on!r}: choose last or best")
    last = resolve_checkpoint_dir(run_dir / "checkpoints" / "last")
    if last is None:
        raise ConfigError(f"--resume {run_dir}: no checkpoints/last there (the run stopped "
                          "before its first checkpoint); start a new run")
    if world_size != 1 or max_restarts:
        try:
            return _launched(launch(None, world_size, resume_dir=run_dir, overrides=overrides,
                                    max_restarts=max_restarts, test_on=test_on, progress=progress))
        except KeyboardInterrupt:
            raise Interrupted(run_dir) from None
    if distributed.is_main():
        if changes:
            say("resuming with changed settings: " + ", ".join(changes))
        say(f"resuming {run_dir} at step {read_meta(last).get('step')}")
    return _execute(cfg, run_dir, test_on, progress, on_epoch_end)


def _execute(cfg: RunConfig, resume_dir: Path | None, test_on: str, progress: bool | None,
             on_epoch_end: EpochHook | None = None, budget_from: float | None = None) -> Run:
    """Build, check, claim the directory, fit, evaluate once, write the outputs.

    Under ``torchrun`` every rank runs this; ``fit`` and the evaluation shard the batches and
    only rank 0 writes files or prints.
    """
    start = time.perf_counter()
    info, device = distributed.init_distributed(resolve_device(cfg.train.device))
    try:
        plan, bundle, model, tuning = _prepare(cfg, resume_dir, info, device,
                                               start if budget_from is None else budget_from)
        cfg = plan.config
        hook = _chain(tuning.on_epoch_end, on_epoch_end)
        run_dir = _claim_run_dir(cfg, resume_dir, info.is_main)
        with _cleanup_if_empty(run_dir, fresh=resume_dir is None), _lock(run_dir, info.is_main):
            try:
                fitted = fit(model, bundle.train, bundle.val if plan.has_val else None, plan,
                             run_dir, num_classes=bundle.num_classes, extra_meta=_meta(model, bundle),
                             resume=resume_dir is not None, progress=progress if info.is_main else False,
                             on_epoch_end=hook)
                results = final_results(model, bundle, cfg, fitted, test_on, device,
                                        progress=progress if info.is_main else False)
            except KeyboardInterrupt:
                raise Interrupted(run_dir) from None
            results["wall_time_s"] = time.perf_counter() - start
            results["distributed"] = dataclasses.asdict(cfg.distributed)
            if info.is_main:
                write_outputs(run_dir, results, bundle.classes)
            # the other ranks wait for rank 0's files: a rank that tears its process group down
            # while rank 0 still writes aborted now and then (gloo, "terminate called ...")
            distributed.barrier()
        return Run(run_dir, cfg, results, fitted)
    finally:
        distributed.cleanup()


def _prepare(cfg: RunConfig, resume_dir: Path | None, info: Any, device: Any,
             budget_from: float) -> tuple[RunPlan, Any, Any, Finetuning]:
    """The run's plan (:class:`~resnetlab.engine.plan.RunPlan`: data, network, task, fine-tune
    policies, steps), checked before any directory is made; the config gets the layout it runs
    on (``distributed``: world size, nodes, global batch) and a time budget's step count.
    Returns (plan, bundle, model, :class:`Finetuning`)."""
    bundle, model = build_data_and_model(cfg, device)
    freeze_if_short = late_freeze_if_short(cfg, bundle, model)  # before as_built resolves it
    cfg = as_built(cfg, bundle)  # "default" augmentation and flip TTA as this data gets them
    # a fine-tune (cfg.finetune.source): pretrained weights and freeze/BN/lr policies
    tuning = prepare_finetune(cfg, model, bundle, device, resume_dir)
    cfg, note = record_layout(cfg, info.world_size)
    if note and resume_dir is None and info.is_main:  # a resume says it in its own words
        say(note)
    plan = make_plan(cfg, bundle.train, task=task_of(bundle.meta, bundle.num_classes, bundle.classes),
                     has_val=_has_val(bundle), model=model, world_size=info.world_size,
                     lr_scales=tuning.lr_scales)
    if resume_dir is None:  # --time-budget fixes train.steps (a resumed run has them); every
        # rank trains the steps rank 0 measured (apply_time_budget broadcasts them)
        plan = apply_time_budget(plan, model, bundle, spent_s=time.perf_counter() - budget_from,
                                 late_freeze=freeze_if_short)
    return plan, bundle, model, tuning


def _chain(first: EpochHook | None, second: EpochHook | None) -> EpochHook | None:
    """Both epoch hooks (each sees every row); training stops when either asks."""
    if first is None or second is None:
        return first or second
    return lambda row: bool(first(row)) | bool(second(row))


def _has_val(bundle: Any) -> bool:
    return bundle.val is not None and bundle.val.num_samples > 0


def _meta(model: Any, bundle: Any) -> dict[str, Any]:
    """What every checkpoint carries so that the network can be rebuilt and fed alone."""
    return {"model": model.build_args, "data": bundle.meta, "classes": bundle.classes}


def _claim_run_dir(cfg: RunConfig, resume_dir: Path | None, main: bool) -> Path:
    """The resumed directory, or a new one made by rank 0 and shared with the other ranks."""
    if resume_dir is not None:
        return resume_dir
    if main and distributed.restart_count() > 0 and cfg.name:
        # torchrun restarted a job that died before its first checkpoint: start it again there,
        # but only in a directory this job made; anything else is never deleted (new_run_dir
        # then says the name is taken)
        earlier = Path(cfg.runs_dir) / cfg.name
        if earlier.is_dir() and made_by_job(earlier):
            shutil.rmtree(earlier, ignore_errors=True)
    made = new_run_dir(cfg.runs_dir, cfg.name, model=cfg.model.name, data=cfg.data.name) if main else None
    return Path(distributed.broadcast_object(str(made) if made else None))


def _lock(run_dir: Path, main: bool) -> contextlib.AbstractContextManager:
    """Rank 0 holds the run directory's lock: two processes never train one run."""
    return lock_run_dir(run_dir) if main else contextlib.nullcontext()


@contextlib.contextmanager
def _cleanup_if_empty(run_dir: Path, fresh: bool):
    """A new run that fails before its first checkpoint leaves no directory behind, so a retry
    with the same ``--name`` works."""
    try:
        yield
    except (UserError, Interrupted):
        if fresh and distributed.is_main() and resolve_checkpoint_dir(run_dir / "checkpoints" / "last") is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
