"""The one way to name a model: ``register_model`` / ``create_model`` / ``list_models``.

Builders register themselves when ``resnetlab.models`` is imported.  The registry loads that
package on first use (by name, so this bottom layer never imports the models layer statically),
which means ``create_model("resnet20")`` works after a bare ``import resnetlab``.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from resnetlab.utils.errors import UserError

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


_REGISTRY: dict[str, ModelEntry] = {}
_BUILTINS_LOADED = False


def register_model(fn: Callable | None = None, *, name: str | None = None, **tags: Any):
    """Register a builder under ``name`` (default: the function's name).

    ``tags`` are free-form facts for tables and filters, e.g. ``family="cifar"``,
    ``input_kind="image"`` or ``"vector"``.  Usable as ``@register_model`` or
    ``@register_model(family="cifar")``.
    """

    def add(builder: Callable) -> Callable:
        key = name or builder.__name__
        if key in _REGISTRY and _REGISTRY[key].builder is not builder:
            raise ValueError(f"model name {key!r} is already registered")
        _REGISTRY[key] = ModelEntry(key, builder, dict(tags))
        return builder

    return add(fn) if fn is not None else add


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("resnetlab.models")


def _entry(name: str) -> ModelEntry:
    _load_builtins()
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
    _load_builtins()
    return sorted((n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)), key=_natural_key)


def model_info(name: str) -> dict[str, Any]:
    """The tags a model was registered with, plus its name."""
    entry = _entry(name)
    return {"name": entry.name, **entry.tags}


def create_model(name: str, **kwargs: Any):
    """Build a registered model.

    The returned module carries ``build_args`` (``{"name": ..., **kwargs}``) so that a checkpoint
    can rebuild exactly the same network later.
    """
    model = _entry(name).builder(**kwargs)
    model.build_args = {"name": name, **kwargs}
    return model
