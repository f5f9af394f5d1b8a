"""The one way to name a model: ``register_model`` / ``create_model`` / ``list_models``.

Each builder in :mod:`resnetlab.models.zoo` is one decorated function whose name is the model's
name (``grep "def resnet50"`` finds it).  This module imports nothing from the models package:
builders import the registry, and ``resnetlab.models`` imports the builders, so the import graph
that import-linter checks is the real one (no dynamic import of the builders from here).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from resnetlab.utils.errors import ConfigError, UserError

__all__ = ["register_model", "create_model", "list_models", "model_info", "UnknownModelError"]


class UnknownModelError(UserError, KeyError):
    """Raised for a model name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., Any]
    tags: dict[str, Any] = field(default_factory=dict)
    accepts: frozenset[str] | None = None  # keyword arguments the builder takes; None: any


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: Callable | None = None, *, name: str | None = None,
                   accepts: frozenset[str] | None = None, **tags: Any):
    """Register a builder under ``name`` (default: the function's name).

    ``accepts`` names the keyword arguments the builder takes: ``create_model`` turns any other
    into a ``ConfigError`` listing them, instead of a ``TypeError`` deep inside a constructor.

    ``tags`` are free-form facts for tables and filters, e.g. ``family="cifar"``,
    ``input_kind="image"`` or ``"vector"``, ``groups=("cifar", "preact")``.  Usable as
    ``@register_model`` or ``@register_model(family="cifar")``.
    """

    def add(builder: Callable) -> Callable:
        key = name or builder.__name__
        if key in _REGISTRY and _REGISTRY[key].builder is not builder:
            raise ValueError(f"model name {key!r} is already registered")
        _REGISTRY[key] = ModelEntry(key, builder, dict(tags), accepts)
        return builder

    return add(fn) if fn is not None else add


def _entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}{hint} (`resnetlab models` lists all {len(_REGISTRY)})"
        )
    return _REGISTRY[name]


def _natural_key(name: str) -> list[str | int]:
    # resnet20 < resnet56 < resnet110 < resnet1202, as in the papers' tables.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob ``pattern``, in natural order (resnet20 before
    resnet110)."""
    return sorted((n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)), key=_natural_key)


def model_info(name: str) -> dict[str, Any]:
    """The tags a model was registered with, plus its name and the module of its builder."""
    entry = _entry(name)
    return {"name": entry.name, "module": entry.builder.__module__, **entry.tags}


def create_model(name: str, **kwargs: Any):
    """Build a registered model.

    The returned module carries ``build_args`` (``{"name": ..., **kwargs}``) so that a checkpoint
    can rebuild exactly the same network later.
    """
    entry = _entry(name)
    unknown = sorted(set(kwargs) - entry.accepts) if entry.accepts is not None else []
    if unknown:
        raise ConfigError(f"{name}: unknown argument {unknown[0]!r}; accepted: "
                          f"{', '.join(sorted(entry.accepts))}")
    model = entry.builder(**kwargs)
    model.build_args = {"name": name, **kwargs}
    return model
