"""Typed run configuration: dataclasses <-> YAML (DESIGN.md, style point 4).

Only plain values live here (str, int, float, bool, lists, dicts), so a config is JSON/YAML-able
and the saved ``config.yaml`` of a run reproduces it with ``resnetlab train --config``.
Every user mistake (unknown key, wrong type) is a one-line :class:`ConfigError` naming the key
and the file it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from resnetlab.utils.errors import ConfigError

__all__ = [
    "ModelConfig", "DataConfig", "OptimConfig", "ScheduleConfig", "TrainConfig", "RunConfig",
    "apply_overrides",
]


@dataclass
class ModelConfig:
    """What to build: ``create_model(name, **kwargs)`` (the CLI adds num_classes / in_chans)."""

    name: str = "resnet20"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Arguments of ``resnetlab.data.build_data`` (the CLI adds seed, device, in_chans)."""

    name: str = "fashion-mnist"
    data_dir: str | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    val_size: int | None = None
    train_size: int | None = None
    augment: str = "default"
    target: str | None = None
    val_dir: str | None = None
    image_size: int | None = None
    on_bad_image: str = "error"
    cache_dir: str | None = None
    download: bool = True


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
    deterministic: bool = False
    device: str = "auto"
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int | None = None
    tta: bool = False


@dataclass
class RunConfig:
    """Everything that defines a training run; saved as ``config.yaml`` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = None
    runs_dir: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists, so it is YAML/JSON-safe)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from a (partial) nested dict; missing keys keep their defaults."""
        return _build(cls, data, source)

    def to_yaml(self, path: str | Path) -> None:
        """Write the fully resolved config (``sort_keys=False`` keeps the dataclass order)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        Path(path).write_text(text)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Read a YAML file; an empty file gives the defaults."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...) at the top")
        return cls.from_dict(data, source=str(path))


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
        return _coerce(value, inner[0], key, source)
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
    raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r}")


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
