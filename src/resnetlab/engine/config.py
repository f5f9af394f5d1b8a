"""Typed run configuration: dataclasses <-> YAML (DESIGN.md, style point 4).

Only plain values live here (str, int, float, bool, lists, dicts), so a config is JSON/YAML-able
and the saved ``config.yaml`` of a run reproduces it with ``resnetlab train --config``.
Every user mistake (unknown key, wrong type) is a one-line :class:`ConfigError` naming the key
and the file it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from resnetlab.utils.duration import parse_duration
from resnetlab.utils.errors import ConfigError

__all__ = [
    "ModelConfig", "DataConfig", "FinetuneConfig", "OptimConfig", "ScheduleConfig", "TrainConfig", "RunConfig",
    "DistributedRecord",
    "apply_overrides", "FLAGS", "flag_for", "validate",
]


@dataclass
class ModelConfig:
    """What to build: ``create_model(name, **kwargs)`` (the CLI adds num_classes / in_chans)."""

    name: str = "resnet20"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """The data section: ``resnetlab.data.build_data(data_cfg, seed=, device=, ...)`` reads it.

    ``val_size``: None is the data's own split (5000 for Fashion-MNIST and CIFAR; 10%, at most
    5000, for folders and tables), a float in (0, 1) a fraction, an int a count.  ``augment``:
    None follows the data (the data set's recipe for images, nothing for tables).
    ``image_size``: one size or ``[height, width]``.
    """

    name: str = "fashion-mnist"
    data_dir: str | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    val_size: int | float | None = None
    train_size: int | None = None
    augment: str | None = None
    target: str | None = None
    val_dir: str | None = None
    image_size: int | tuple[int, int] | None = None
    # Progressive resizing: training is split into len(progressive_sizes) equal phases of
    # optimiser steps, and phase k trains on images whose longer side is resized (bilinear,
    # antialiased) to progressive_sizes[k], e.g. [20, 20, 24, 28]: early epochs cost half.
    # Validation and test always see the full size.  Empty: every step at the full size.
    progressive_sizes: list[int] = field(default_factory=list)
    on_bad_image: str = "error"
    cache_dir: str | None = None
    download: bool = True
    # Reached with --set data.KEY=VALUE.  split_seed fixes the hold-out (and --train-size
    # subset) independently of the training seed; num_workers None: none for < 512 files;
    # in_memory None: decode a folder into memory when it fits in a quarter of RAM;
    # categorical: CSV columns forced to categories; encoding: onehot or embed.
    # allow_single_class: train on one class (otherwise an error); task: table target is
    # "classification", "regression" or None (regression for a numeric target with many values).
    allow_single_class: bool = False
    task: str | None = None
    split_seed: int = 0
    num_workers: int | None = None
    in_memory: bool | None = None
    categorical: list[str] = field(default_factory=list)
    encoding: str = "onehot"


@dataclass
class OptimConfig:
    """Optimiser.  ``sgd`` with Nesterov momentum is the paper's recipe (He et al. 2016, sec. 4.2).

    ``weight_decay`` skips norm-layer parameters and biases unless ``decay_norm_and_bias``:
    decaying a BN scale only changes the effective learning rate of the layer before it.
    """

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, a pure function of the optimiser step.

    name: ``onecycle`` (linear warm-up, then linear decay to ``final_lr_frac``), ``cosine``
    (warm-up, then half-cosine decay), ``step`` (warm-up, then x ``gamma`` at each milestone;
    the paper divides by 10 at 32k and 48k of 64k iterations) or ``constant`` (warm-up only).
    Warm-up is ``warmup_epochs`` (epochs, may be fractional) or ``warmup_frac`` (fraction of
    all steps), starting from ``warmup_start_frac`` x lr.  ``milestones`` are in epochs.
    """

    name: str = "onecycle"
    warmup_epochs: float = 0.0
    warmup_frac: float = 0.0
    warmup_start_frac: float = 0.0
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    final_lr_frac: float = 0.0


@dataclass
class TrainConfig:
    """The loop: length, regularisation, precision, reproducibility, logging, checkpoints.

    ``checkpoint_every`` (optimiser steps) saves ``checkpoints/last`` inside an epoch as well as
    at its end; ``max_steps`` stops early for smoke tests; ``early_stop_metric`` is a column of
    ``metrics.csv`` (``val_top1``, ``val_top5``, ``val_loss``, ``train_loss``, ``train_top1``).
    """

    epochs: int = 10
    max_steps: int | None = None
    label_smoothing: float = 0.0
    ema_decay: float | None = None
    clip_grad_norm: float | None = None
    early_stop_patience: int | None = None
    early_stop_metric: str = "val_top1"
    max_nonfinite_steps: int = 10
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    # BatchNorm statistics over the global batch of all ranks under torchrun (no-op on one)
    sync_bn: bool = False
    deterministic: bool = False
    device: str = "auto"
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int | None = None
    tta: bool = False
    # ``time_budget`` (seconds, or text such as "5m"): before training, a few steps are timed
    # and ``steps`` is fixed so the whole run ends inside it (resnetlab.run.budget); a config
    # that already has ``steps`` (a saved config.yaml) reruns that length without measuring.
    time_budget: float | str | None = None
    # The run's length in optimiser steps when set: the schedule ends there, not at epochs.
    steps: int | None = None


@dataclass
class FinetuneConfig:
    """Fine-tuning from a pretrained run or weights file (``source``; None: train from scratch).

    ``freeze``: ``none``, ``stem``, ``stages:K`` (the stem and K stages from the input) or
    ``backbone``; ``bn``: ``train`` or ``frozen`` (running statistics, no gamma/beta updates);
    ``backbone_lr_scale`` multiplies the backbone's learning rate (the head's is ``optim.lr``);
    ``unfreeze_at``: frozen stages train after this many epochs; ``bn_reestimate``: batches of
    the new data that recompute BN statistics before training (0: none).  ``source_classes``
    records the pretrained classes (filled in by the fine-tune).
    """

    source: str | None = None
    freeze: str = "none"
    bn: str = "train"
    backbone_lr_scale: float = 1.0
    unfreeze_at: int | None = None
    bn_reestimate: int = 0
    source_classes: list[str] = field(default_factory=list)


@dataclass
class DistributedRecord:
    """How the run was laid out, *recorded* by the run (not a setting: ``--nproc`` or torchrun
    decide it).  ``world_size`` processes on ``nodes`` machines (``procs_per_node`` each); the
    optimiser sees ``global_batch`` = world_size x ``data.batch_size`` samples per step, so a
    run repeated on another world size is a different run.  None: not recorded (a config
    written by hand, or before resnetlab recorded it)."""

    world_size: int | None = None
    nodes: int | None = None
    procs_per_node: int | None = None
    global_batch: int | None = None


@dataclass
class RunConfig:
    """Everything that defines a training run; saved as ``config.yaml`` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distributed: DistributedRecord = field(default_factory=DistributedRecord)
    name: str | None = None
    runs_dir: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists, so it is YAML/JSON-safe)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from a (partial) nested dict; missing keys keep their defaults.  Values out
        of range (a NaN learning rate, ``epochs: 0``) are a :class:`ConfigError`."""
        cfg = _build(cls, data, source)
        validate(cfg, source)
        return cfg

    def to_yaml(self, path: str | Path) -> None:
        """Write the fully resolved config (``sort_keys=False`` keeps the dataclass order)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        Path(path).write_text(text)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Read a YAML file; an empty file gives the defaults."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start}); a config is "
                              "YAML text like the shipped recipes (resnetlab/recipes/default.yaml)") from None
        except OSError as err:  # a directory, no permission, an I/O error
            raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = str(getattr(err, "problem", None) or err).splitlines()[0]  # one line
            raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...) at the top")
        return cls.from_dict(data, source=str(path))


# The flag a command-line user types for each key.  This is the one table: ``resnetlab train``
# maps its flags through it, and error messages name the flag.  A key without a flag is reached
# with ``--set section.key=value``.
FLAGS: dict[str, str] = {
    "model.name": "--model", "model.kwargs.drop_rate": "--drop-rate",
    "model.kwargs.drop_path_rate": "--drop-path", "model.kwargs.width_mult": "--width-mult",
    "model.kwargs.zero_init_last": "--zero-init-last", "model.kwargs.shortcut": "--shortcut",
    "model.kwargs.in_chans": "--in-chans",
    "data.name": "--data", "data.data_dir": "--data-dir", "data.batch_size": "--batch-size",
    "data.eval_batch_size": "--eval-batch-size", "data.val_size": "--val-size",
    "data.train_size": "--train-size", "data.augment": "--augment", "data.target": "--target",
    "data.val_dir": "--val-dir", "data.image_size": "--image-size",
    "data.progressive_sizes": "--progressive-sizes",
    "data.on_bad_image": "--on-bad-image", "data.cache_dir": "--cache-dir",
    "data.download": "--download", "data.allow_single_class": "--allow-single-class",
    "data.task": "--task",
    "optim.name": "--optimizer", "optim.lr": "--lr", "optim.momentum": "--momentum",
    "optim.nesterov": "--nesterov", "optim.weight_decay": "--weight-decay",
    "optim.decay_norm_and_bias": "--decay-norm-and-bias", "optim.betas": "--betas",
    "optim.eps": "--eps",
    "schedule.name": "--schedule", "schedule.warmup_epochs": "--warmup-epochs",
    "schedule.warmup_frac": "--warmup-frac", "schedule.warmup_start_frac": "--warmup-start-frac",
    "schedule.milestones": "--milestones", "schedule.gamma": "--gamma",
    "schedule.final_lr_frac": "--final-lr-frac",
    "train.epochs": "--epochs", "train.max_steps": "--max-steps",
    "train.label_smoothing": "--label-smoothing", "train.ema_decay": "--ema",
    "train.clip_grad_norm": "--clip-grad", "train.early_stop_patience": "--early-stop",
    "train.early_stop_metric": "--early-stop-metric",
    "train.max_nonfinite_steps": "--max-nonfinite-steps", "train.precision": "--precision",
    "train.channels_last": "--channels-last", "train.compile": "--compile",
    "train.sync_bn": "--sync-bn",
    "train.deterministic": "--deterministic", "train.device": "--device", "train.seed": "--seed",
    "train.log_every": "--log-every", "train.checkpoint_every": "--checkpoint-every",
    "train.tta": "--tta", "train.time_budget": "--time-budget", "name": "--name", "runs_dir": "--runs-dir",
}


def flag_for(key: str) -> str:
    """``"optim.lr"`` -> ``"--lr"``; a key without its own flag -> ``"--set optim.eps"``."""
    return FLAGS.get(key, f"--set {key}")


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _duration_ok(value: Any) -> bool:
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


def _in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], bool]:
    def check(x: Any) -> bool:
        return _finite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    return check


# metrics.csv columns that can pick the best checkpoint; True = higher is better
METRICS = {"val_top1": True, "val_top5": True, "val_loss": False, "train_top1": True, "train_loss": False,
           "val_rmse": False, "val_r2": True, "train_rmse": False}  # the last three: regression
_INF = math.inf
_POSITIVE, _NON_NEGATIVE, _COUNT = _in(0, _INF, lo_open=True), _in(0, _INF), _in(1, _INF)
# key: (check, what a good value is).  None (where a key allows it) is never checked.
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "optim.lr": (_POSITIVE, "a finite number > 0"),
    "optim.momentum": (_in(0, 1, hi_open=True), "in [0, 1)"),
    "optim.weight_decay": (_NON_NEGATIVE, "a finite number >= 0"),
    "optim.betas": (_in(0, 1, hi_open=True), "two numbers in [0, 1)"),
    "optim.eps": (_POSITIVE, "a finite number > 0"),
    "schedule.warmup_epochs": (_NON_NEGATIVE, "a finite number of epochs >= 0"),
    "schedule.warmup_frac": (_in(0, 1, hi_open=True), "a fraction of all steps in [0, 1)"),
    "schedule.warmup_start_frac": (_in(0, 1), "in [0, 1]"),
    "schedule.milestones": (_NON_NEGATIVE, "epochs >= 0"),
    "schedule.gamma": (_POSITIVE, "a finite number > 0"),
    "schedule.final_lr_frac": (_in(0, 1), "in [0, 1]"),
    "train.epochs": (_COUNT, "at least 1"),
    "train.max_steps": (_COUNT, "at least 1"),
    "train.label_smoothing": (_in(0, 1, hi_open=True), "in [0, 1)"),
    "train.ema_decay": (_in(0, 1, lo_open=True, hi_open=True), "in (0, 1), e.g. 0.999"),
    "train.clip_grad_norm": (_POSITIVE, "a finite number > 0"),
    "train.early_stop_patience": (_COUNT, "at least 1 epoch"),
    "train.max_nonfinite_steps": (_COUNT, "at least 1"),
    "train.early_stop_metric": (lambda v: v in METRICS, "one of " + ", ".join(METRICS)),
    "train.log_every": (_COUNT, "at least 1 step"),
    "train.steps": (_COUNT, "at least 1"),
    "train.time_budget": (_duration_ok, "a duration such as 5m, 90s or 300 (seconds)"),
    "train.checkpoint_every": (_NON_NEGATIVE, ">= 0 steps (0 or null: only at epoch ends)"),
    "data.batch_size": (_COUNT, "at least 1"),
    "data.eval_batch_size": (_COUNT, "at least 1"),
    "data.train_size": (_COUNT, "at least 1"),
    "data.val_size": (lambda v: (isinstance(v, int) and v >= 0) or 0 < v < 1,
                      "a count >= 0 or a fraction in (0, 1), e.g. 500 or 0.1"),
    "data.progressive_sizes": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 4,
                               "whole pixel sizes >= 4, e.g. 20,24,28"),
    "data.on_bad_image": (lambda v: v in ("error", "skip"), "error or skip"),
    "data.task": (lambda v: v in ("classification", "regression"), "classification or regression"),
    "finetune.bn": (lambda v: v in ("train", "frozen"), "train or frozen"),
    "finetune.backbone_lr_scale": (_NON_NEGATIVE, "a finite number >= 0"),
    "finetune.unfreeze_at": (_NON_NEGATIVE, "an epoch >= 0"),
    "finetune.bn_reestimate": (_NON_NEGATIVE, "a number of batches >= 0"),
}


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Raise a one-line :class:`ConfigError` for the first value out of its range.

    Called by :meth:`RunConfig.from_dict` (so YAML files and flag overrides are checked before
    any run directory exists) and by ``fit`` (for configs built in Python).
    """
    for key, (check, good) in CHECKS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        values = value if isinstance(value, (list, tuple)) else [value]
        if value is None or all(check(v) for v in values):
            continue
        shown = _show(value)
        if source == "flags":
            raise ConfigError(f"{flag_for(key)} {shown}: must be {good}")
        raise ConfigError(f"{source}: {key} {shown} must be {good} (flag {flag_for(key)})")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{source}: unknown key {prefix}{key}{_did_you_mean(str(key), names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, source, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}", source)
    return cls(**kwargs)


def _did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(options)})"


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``hint``; accept lossless conversions only."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # the first type that takes the value: 500.0 -> int, 0.1 -> float
            try:
                return _coerce(value, option, key, source)
            except ConfigError:
                continue
        return _coerce(value, inner[-1], key, source)
    if hint is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        if origin is tuple and len(args) != len(value):
            raise ConfigError(f"{source}: {key} needs {len(args)} values, got {list(value)!r}")
        items = args if origin is tuple else [args[0]] * len(value)
        out = [_coerce(v, t, f"{key}[{i}]", source) for i, (v, t) in enumerate(zip(value, items, strict=True))]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(value, hint, key, source)


def _coerce_scalar(value: Any, hint: type, key: str, source: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads ``1e-3`` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    raise _type_error(key, value, hint.__name__, source)


def _type_error(key: str, value: Any, expected: str, source: str) -> ConfigError:
    """A value of the wrong type; from flags the error names the flag (``--progressive-sizes
    20.5: must be whole pixel sizes >= 4``) and what the key's range check asks for."""
    if source != "flags":
        return ConfigError(f"{source}: {key} must be {expected}, got {value!r}")
    base = key.split("[")[0]  # data.progressive_sizes[1] -> data.progressive_sizes
    good = CHECKS[base][1] if base in CHECKS else expected
    return ConfigError(f"{flag_for(base)} {_show(value)}: must be {good}")


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], source: str = "override") -> RunConfig:
    """A copy of ``cfg`` with dotted keys replaced, e.g. ``{"optim.lr": 0.05}``.

    Values are type-checked like YAML values; strings (from ``--set key=value``) are parsed as
    YAML scalars for non-string fields, so ``"0.05"``, ``"true"`` and ``"[30, 45]"`` work.
    ``model.kwargs.NAME`` sets a model argument unchecked (the model builder checks it).
    """
    data = cfg.to_dict()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[:2] == ["model", "kwargs"] and len(parts) == 3:
            data["model"]["kwargs"][parts[2]] = _parse_scalar(value)
            continue
        node, cls = data, RunConfig
        for part in parts[:-1]:
            cls = _field_type(cls, part, dotted, source)
            if not dataclasses.is_dataclass(cls):
                raise ConfigError(f"{source}: unknown key {dotted} ({part} is not a section)")
            node = node[part]
        hint = _field_type(cls, parts[-1], dotted, source)
        if dataclasses.is_dataclass(hint):
            raise ConfigError(f"{source}: {dotted} is a section; set one of its keys instead")
        node[parts[-1]] = _plain(_coerce(_parse_for(value, hint), hint, dotted, source))
    return RunConfig.from_dict(data, source=source)


def _field_type(cls: type, name: str, dotted: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ConfigError(f"{source}: unknown key {dotted}{_did_you_mean(name, list(hints))}")
    return hints[name]


def _parse_for(value: Any, hint: Any) -> Any:
    """Parse a command-line string unless the field is a string (``--set data.name=123``)."""
    if not isinstance(value, str):
        return value
    is_str = hint is str or (typing.get_origin(hint) in (Union, types.UnionType)
                             and str in typing.get_args(hint))
    if is_str:
        return None if value in ("null", "~") else value
    return _parse_scalar(value)


def _parse_scalar(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value
