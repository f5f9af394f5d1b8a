"""Recipes (``default``, ``long``) shipped inside the package, and resolving a run's config.

The recipes are package data (``resnetlab/recipes/*.yaml``), found with
:mod:`importlib.resources`, so an installed resnetlab (not only a checkout) runs
``resnetlab train --config long``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from resnetlab.engine.config import RunConfig, apply_overrides, flag_for
from resnetlab.engine.distributed import restart_count
from resnetlab.utils.errors import ConfigError

__all__ = ["recipe_names", "locate_recipe", "load_recipe", "config_with", "resume_config",
           "fresh_name"]


def _recipe_dir():
    return resources.files("resnetlab") / "recipes"


def recipe_names() -> list[str]:
    """The recipes shipped with resnetlab, e.g. ``["default", "long"]``."""
    return sorted(p.name[:-5] for p in _recipe_dir().iterdir() if p.name.endswith(".yaml"))


def locate_recipe(spec: str | os.PathLike) -> Path:
    """A YAML file path, or the shipped recipe of that name (``default`` -> ``recipes/default.yaml``)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix or os.sep in str(spec):
        raise ConfigError(f"--config {spec}: no such file")
    shipped = _recipe_dir() / f"{spec}.yaml"
    if not shipped.is_file():
        raise ConfigError(f"--config {spec}: no recipe of that name (shipped: "
                          f"{', '.join(recipe_names())}); pass a YAML file path")
    return Path(str(shipped))


def load_recipe(spec: str | os.PathLike = "default") -> RunConfig:
    """The :class:`RunConfig` of a shipped recipe name or a YAML file."""
    return RunConfig.from_yaml(locate_recipe(spec))


def config_with(recipe: str | os.PathLike | RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """``recipe`` (a name, file or config) with dotted-key ``overrides`` from flags applied.

    A run's length is given one way: a time budget given now is planned now (not a saved
    config's ``train.steps``), and ``--epochs`` or ``train.steps`` given without one replaces
    the recipe's budget (``resnetlab train --epochs 2`` trains 2 epochs, not "at most 2 inside
    the default 5 minutes").
    """
    base = recipe if isinstance(recipe, RunConfig) else load_recipe(recipe)
    return apply_overrides(base, _one_length(overrides), source="flags")


def _one_length(overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(overrides)
    if "train.time_budget" in out:
        out.setdefault("train.steps", None)
    elif "train.epochs" in out or "train.steps" in out:
        out.setdefault("train.time_budget", None)
        out.setdefault("train.steps", None)  # a saved budget's steps give way to the epochs
    else:
        return out
    out.setdefault("train.budget_stop", None)  # and so does where its deadline stopped
    out.setdefault("train.budget_end", None)  # or moved the end
    return out


# What a resumed run cannot change: its checkpoint holds this network trained on this data, and
# the seed fixes the batch order and augmentation of the steps still to come.
_FROZEN_ON_RESUME = ("model.", "data.", "train.seed", "name", "runs_dir")
# Keys that only say where things are, so they may change on resume.
_MOVABLE = ("data.data_dir", "data.cache_dir", "data.download", "train.device")


def resume_config(run_dir: str | os.PathLike, overrides: dict[str, Any]) -> tuple[RunConfig, list[str]]:
    """The resumed run's ``config.yaml`` with ``overrides``, and the changes as text.

    A change to the model, the data or the seed is a :class:`ConfigError` naming the flag.
    """
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there (not a run directory)")
    saved = RunConfig.from_yaml(saved_path)
    cfg = apply_overrides(saved, _one_length(overrides), source="flags")
    before, after = _flatten(saved.to_dict()), _flatten(cfg.to_dict())
    changed = [k for k in after if after[k] != before.get(k)]
    for key in changed:
        if key.startswith(_FROZEN_ON_RESUME) and key not in _MOVABLE:
            flag = flag_for(key)
            raise ConfigError(f"--resume {run_dir}: the run was trained with {key}={before.get(key)!r}; "
                              f"{flag} {after[key]!r} does not match its checkpoint (drop {flag}, or "
                              "start a new run)")
    return cfg, [f"{k} {before.get(k)!r} -> {after[k]!r}" for k in changed]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "kwargs":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def fresh_name(cfg: RunConfig, named_by_flag: bool) -> tuple[RunConfig, str | None]:
    """A ``name`` that came from a config file (a run's saved config.yaml) and is taken gets a
    new timestamped name instead, with a note saying so: ``--config runs/X/config.yaml`` repeats
    X, never overwrites it.  A taken ``--name`` given as a flag is an error."""
    if cfg.name is None or not (Path(cfg.runs_dir) / cfg.name).exists():
        return cfg, None
    if restart_count() > 0:  # torchrun --max-restarts: the failed attempt made it; train resumes it
        return cfg, None
    taken = Path(cfg.runs_dir) / cfg.name
    if named_by_flag:
        raise ConfigError(f"run directory {taken} already exists; use --resume {taken} "
                          "or another --name")
    cfg.name = None
    return cfg, f"{taken} exists; this run gets a new name (pass --name to choose)"
