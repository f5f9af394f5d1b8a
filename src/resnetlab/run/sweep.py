"""Hyperparameter sweeps on Optuna: every trial is an ordinary :func:`resnetlab.run.train` run.

A sweep is a search space (a small YAML file of config keys, :func:`load_space`), a base config
(the recipe and flags that fix everything not searched), a storage (SQLite by default at
``RUNS/sweeps/NAME.db``, any SQLAlchemy URL, or ``journal:PATH``) and a number of trials.
:func:`sweep` runs trials in this process or ``workers`` local processes until ``trials`` of
them are COMPLETE or PRUNED; the same call on other machines against the same storage joins the
same study.  Each trial trains ``RUNS/sweeps/NAME/trial-NNNN`` (config.yaml, metrics,
checkpoints, results.json), and the trial's user attribute ``run_dir`` links it.

Killed sweeps: a running trial sends a heartbeat to the storage (Optuna's RDB heartbeat); a trial
silent for ``3 x heartbeat_s`` is marked FAIL by the next worker that looks, and
``RetryFailedTrialCallback`` queues its parameters again.  The retry continues the failed
trial's run directory from its last checkpoint when it has one.  FAIL never counts as done.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from resnetlab.engine.config import METRICS, RunConfig, apply_overrides
from resnetlab.engine.rundir import RunLockedError
from resnetlab.run.experiment import resume, train
from resnetlab.utils.device import threads_per_process
from resnetlab.utils.errors import ConfigError, UserError
from resnetlab.utils.notices import say

__all__ = ["Param", "SweepPlan", "load_space", "sweep", "open_study", "storage_url", "PRUNERS"]

PRUNERS = ("median", "hyperband", "none")
_KINDS = {"loguniform": 2, "uniform": 2, "int": 2, "intlog": 2}
_FAILS_IN_A_ROW = 3  # a worker whose first trials all fail stops: the fixed flags are wrong
_POLL_S = 1.0
try:  # optuna >= 4.9 renamed the RDB storage's stale-trial callback argument
    import optuna.storages as _storages

    _RETRY_KWARG = ("heartbeat_stale_trial_callback"
                    if hasattr(_storages, "RetryHeartbeatStaleTrialCallback") else "failed_trial_callback")
except ImportError:  # optuna is the `sweep` extra; the error comes when a sweep starts
    _RETRY_KWARG = "failed_trial_callback"


@dataclass(frozen=True)
class Param:
    """One searched config key: ``kind`` is loguniform, uniform, int, intlog or choice."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def spec(self) -> Any:
        """The YAML form (what the study stores to recognise its space)."""
        return list(self.choices) if self.kind == "choice" else f"{self.kind} {self.low:g} {self.high:g}"

    def first(self) -> Any:
        """A value inside the range (to check that the key takes such values)."""
        if self.kind == "choice":
            return self.choices[0]
        return int(self.low) if self.kind.startswith("int") else float(self.low)


def load_space(path: str | os.PathLike, base: RunConfig) -> dict[str, Param]:
    """The search space in ``path`` (``optim.lr: loguniform 0.01 1``, ``model.name: [a, b]``),
    checked against ``base``: every key must be a config key taking such values."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"search space {path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"search space {path}: not a readable YAML file ({first})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"search space {path}: expected a mapping of config keys to ranges, e.g. "
                          "'optim.lr: loguniform 0.01 1'")
    space = {str(k): _param(path, str(k), v) for k, v in data.items()}
    for key, param in space.items():  # unknown keys and wrong types: one line naming both
        apply_overrides(base, {key: param.first()}, source=f"search space {path}")
    return space


def _param(path: Path, key: str, value: Any) -> Param:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"search space {path}: {key}: an empty list of choices")
        return Param(key, "choice", choices=tuple(value))
    words = str(value).split()
    if not words or words[0] not in _KINDS or len(words) != 3:
        raise ConfigError(f"search space {path}: {key}: {value!r} is not a range; write "
                          "'loguniform LOW HIGH', 'uniform LOW HIGH', 'int LOW HIGH' or a list of choices")
    try:
        low, high = float(words[1]), float(words[2])
    except ValueError:
        raise ConfigError(f"search space {path}: {key}: {value!r}: LOW and HIGH must be numbers") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high) or (
            words[0] in ("loguniform", "intlog") and low <= 0):
        raise ConfigError(f"search space {path}: {key}: {value!r}: need LOW < HIGH "
                          f"{'(and LOW > 0 on a log scale)' if 'log' in words[0] else ''}".rstrip())
    return Param(key, words[0], low, high)


@dataclass
class SweepPlan:
    """Everything a sweep worker needs (picklable: workers are separate processes)."""

    space: dict[str, Param]
    base: RunConfig
    trials: int
    study: str
    storage: str
    pruner: str = "median"
    heartbeat_s: float = 10.0
    sampler_seed: int | None = None
    metric: str = "val_top1"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return "maximize" if METRICS.get(self.metric, True) else "minimize"

    @property
    def trial_dir(self) -> Path:
        return Path(self.base.runs_dir) / "sweeps" / self.study


def storage_url(storage: str | None, runs_dir: str, study: str) -> str:
    """``storage`` as given, or SQLite at ``RUNS/sweeps/STUDY.db``."""
    if storage:
        return storage
    path = Path(runs_dir) / "sweeps" / f"{study}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


# what a worker sees when another creates the same new database at the same moment
_SCHEMA_RACE = ("IntegrityError", "locked", "already exists")


def _storage(url: str, heartbeat_s: float):
    """An Optuna storage for ``url``; one line naming the URL when it cannot be opened.
    Workers that start together race to create the schema of a new database (the loser sees
    an IntegrityError, or "table ... already exists"): a few tries, a moment apart, settle it."""
    for attempt in range(4):
        try:
            return _open_storage(url, heartbeat_s)
        except Exception as err:  # sqlalchemy/driver errors have many types; all mean "cannot open"
            first = (str(err).splitlines() or [type(err).__name__])[0][:200]
            if attempt == 3 or not any(race in first for race in _SCHEMA_RACE):
                raise ConfigError(f"--storage {url}: cannot open the study storage ({first})") from None
            time.sleep(0.5 * (attempt + 1))


def _open_storage(url: str, heartbeat_s: float):
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    # SQLite: a writer waits for another's lock instead of failing (two workers, one file)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    retry = {_RETRY_KWARG: _retry_callback()(max_retry=None)}
    return optuna.storages.RDBStorage(
        url, engine_kwargs=engine, heartbeat_interval=max(1, round(heartbeat_s)),
        grace_period=max(3, round(3 * heartbeat_s)), **retry)


def _retry_callback() -> type:
    """Optuna's callback that queues a stale trial's parameters again (renamed in 4.9)."""
    import optuna

    return getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback


def _pruner(plan: SweepPlan):
    import optuna

    if plan.pruner == "median":  # a few trials first, so the median means something
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, plan.trials // 4)),
                                           n_warmup_steps=1)
    if plan.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=plan.base.train.epochs)
    if plan.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {plan.pruner}: choose median, hyperband or none")


def open_study(plan: SweepPlan, seed_offset: int = 0):
    """Create or join the study; a study of that name with another space is an error."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours
    # heartbeat and retry are marked experimental; their warning would repeat on every trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seed = None if plan.sampler_seed is None else plan.sampler_seed + seed_offset
    try:
        study = optuna.create_study(
            storage=_storage(plan.storage, plan.heartbeat_s), study_name=plan.study,
            direction=plan.direction, load_if_exists=True, pruner=_pruner(plan),
            sampler=optuna.samplers.TPESampler(seed=seed))
    except UserError:
        raise
    except Exception as err:
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(f"--storage {plan.storage}: cannot open study {plan.study} ({first})") from None
    mine = {"space": {k: p.spec() for k, p in plan.space.items()}, "metric": plan.metric}
    saved = {k: study.user_attrs.get(k) for k in mine}
    if saved["space"] is None:
        for key, value in mine.items():
            study.set_user_attr(key, value)
    elif saved != mine:
        raise ConfigError(f"--study {plan.study}: taken in {plan.storage} by another search space "
                          f"({_space_text(saved)}); use another --study or that space")
    return study


def _space_text(saved: dict[str, Any]) -> str:
    space = saved.get("space") or {}
    return ", ".join(f"{k}: {v}" for k, v in space.items()) + f"; metric {saved.get('metric')}"


def sweep(plan: SweepPlan, workers: int = 1) -> Any:
    """Run trials until ``plan.trials`` are COMPLETE or PRUNED (in this process, or in
    ``workers`` local processes); returns the study."""
    if plan.trials < 1:
        raise ConfigError(f"--trials {plan.trials}: give at least 1")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    study = open_study(plan)  # bad storage or a taken name fails here, once
    plan.extra["workers"] = workers
    if workers == 1:
        work(plan)
        return study
    ctx = multiprocessing.get_context("spawn")
    lock = ctx.Lock()
    procs = [ctx.Process(target=_worker_main, args=(plan, i, lock), daemon=False) for i in range(workers)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:  # the workers got the same Ctrl-C
        for proc in procs:
            proc.join(timeout=60)
        raise
    failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        raise ConfigError(f"sweep worker(s) {', '.join(map(str, failed))} stopped with an error "
                          "(printed above); run the same command again to continue the study")
    return study


def _worker_main(plan: SweepPlan, index: int, lock: Any = None) -> None:
    """A ``--workers`` process: its share of the cores, then :func:`work`."""
    import torch

    torch.set_num_threads(threads_per_process(plan.extra.get("workers", 1)))
    try:
        work(plan, seed_offset=index, lock=lock)
    except UserError as err:
        print(f"error (sweep worker {index}): {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def work(plan: SweepPlan, seed_offset: int = 0, lock: Any = None) -> None:
    """One worker: ask the study for trials and train them until enough are done.

    A worker does not start a trial while done + running already reach ``plan.trials``; it
    waits for the running ones instead (a running trial that dies goes back to the queue).
    ``lock``, shared by one command's ``--workers``, makes counting and starting a trial one
    step, so they never start one trial too many."""
    study = open_study(plan, seed_offset)
    fails = 0
    while True:
        box: dict[str, Any] = {}
        if lock is not None:
            lock.acquire()
            box["lock"] = lock  # released by the trial once it is RUNNING in the storage
        try:
            room = _room(plan, study)
            if room == "go":
                study.optimize(functools.partial(_objective, plan=plan, study=study, box=box), n_trials=1)
        finally:
            _release(box)
        if room == "done":
            return
        if room == "wait":
            time.sleep(_POLL_S)
            continue
        fails = fails + 1 if box.get("error") else 0
        if fails >= _FAILS_IN_A_ROW:
            raise ConfigError(f"{fails} trials in a row failed; the last: {box['error']}")


def _room(plan: SweepPlan, study: Any) -> str:
    """``done`` (enough trials finished), ``wait`` (the running ones would finish the study)
    or ``go``."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    # a journal storage has no heartbeat: a killed trial stays RUNNING there for ever, so
    # waiting for running trials could wait for ever (several machines may then overshoot)
    running = 0 if plan.storage.startswith("journal:") else len(
        study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    if done >= plan.trials:
        return "done"
    return "wait" if done + running >= plan.trials else "go"


def _release(box: dict[str, Any]) -> None:
    lock = box.pop("lock", None)
    if lock is not None:
        lock.release()


def _objective(trial: Any, plan: SweepPlan, study: Any, box: dict[str, Any]) -> float:
    """Train one trial's run; report each epoch's metric to the pruner."""
    import optuna

    _release(box)  # this trial is RUNNING in the storage now: the next worker may count

    overrides = {key: _suggest(trial, p) for key, p in plan.space.items()}
    hook = _Pruning(trial, plan.metric)
    try:
        cfg = apply_overrides(plan.base, overrides, source=f"trial {trial.number}")
        cfg = replace(cfg, runs_dir=str(plan.trial_dir), name=f"trial-{trial.number:04d}")
        run = _train_or_continue(cfg, _retried_run(trial, study), trial, hook)
    except KeyboardInterrupt:  # Ctrl-C: this trial fails and its parameters go back to the queue
        _retry_callback()()(study, study.get_trials(deepcopy=False)[trial.number])
        raise
    except UserError as err:  # e.g. a learning rate that diverges: this trial fails, not the sweep
        box["error"] = str(err)
        trial.set_user_attr("error", str(err))
        say(f"trial {trial.number} failed: {err}")
        return float("nan")
    value = _best_value(Path(run.run_dir), plan)
    trial.set_user_attr("run_dir", str(run.run_dir))
    if not math.isfinite(value):  # Optuna fails a NaN trial; the sweep must count it as failed
        box["error"] = (f"{plan.metric} was never measured in {run.run_dir} (no validation "
                        "rows? choose the metric with --early-stop-metric)")
        trial.set_user_attr("error", box["error"])
        say(f"trial {trial.number} failed: {box['error']}")
        return value
    text = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    if hook.pruned is not None:
        say(f"trial {trial.number} pruned at epoch {hook.pruned}: {plan.metric} {value:.4g} ({text})")
        raise optuna.TrialPruned()
    say(f"trial {trial.number} complete: {plan.metric} {value:.4g} ({text}) {run.run_dir}")
    return value


def _train_or_continue(cfg: RunConfig, earlier: Path | None, trial: Any, hook: Any):
    """Continue the run of the trial this one retries (killed mid-run) when it has a
    checkpoint; otherwise train afresh."""
    if earlier is not None:
        trial.set_user_attr("run_dir", str(earlier))
        try:
            return resume(earlier, progress=False, on_epoch_end=hook)
        except RunLockedError:
            pass  # still held by a live process elsewhere: start this trial's own run
    trial.set_user_attr("run_dir", str(Path(cfg.runs_dir) / str(cfg.name)))
    if (Path(cfg.runs_dir) / str(cfg.name)).exists():
        cfg = replace(cfg, name=f"{cfg.name}-{os.getpid()}")  # a study recreated under a used name
    return train(cfg, progress=False, on_epoch_end=hook)


def _retried_run(trial: Any, study: Any) -> Path | None:

    frozen = study.get_trials(deepcopy=False)[trial.number]
    number = _retry_callback().retried_trial_number(frozen)
    if number is None:
        return None
    old = study.get_trials(deepcopy=False)[number].user_attrs.get("run_dir")
    if old and (Path(old) / "checkpoints" / "last").exists():
        say(f"trial {trial.number} retries trial {number} (cut off): continuing {old}")
        return Path(old)
    return None


def _suggest(trial: Any, p: Param) -> Any:
    if p.kind == "choice":
        return trial.suggest_categorical(p.key, list(p.choices))
    if p.kind.startswith("int"):
        return trial.suggest_int(p.key, int(p.low), int(p.high), log=p.kind == "intlog")
    return trial.suggest_float(p.key, p.low, p.high, log=p.kind == "loguniform")


class _Pruning:
    """The epoch hook: report the metric at each epoch, stop the run when the pruner says so."""

    def __init__(self, trial: Any, metric: str):
        self.trial, self.metric, self.pruned, self.last = trial, metric, None, 0

    def __call__(self, row: dict[str, Any]) -> bool:
        value, epoch = row.get(self.metric), math.ceil(float(row.get("epoch") or 0))
        if value is None or epoch <= self.last:
            return False
        self.last = epoch
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned = epoch
            return True
        return False


def _best_value(run_dir: Path, plan: SweepPlan) -> float:
    """The best epoch's metric in the run's metrics.jsonl (continued runs included)."""
    import json

    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    values = [float(r[plan.metric]) for r in rows if r.get(plan.metric) is not None]
    if not values:
        return float("nan")
    return max(values) if plan.direction == "maximize" else min(values)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

