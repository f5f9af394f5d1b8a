"""Argument checks shared by layers and models: each failure is one ``ConfigError`` line naming
the argument, its value and what would be accepted."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from resnetlab.utils.errors import ConfigError

__all__ = ["check_rate", "check_positive", "check_positive_int", "check_non_negative",
           "check_choice"]


def check_rate(name: str, value: float) -> float:
    """A drop probability: a number in [0, 1).  1 would drop everything, so it is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name}={value!r} must be a probability in [0, 1) (e.g. 0.1)")
    return float(value)


def check_positive(name: str, value: Any) -> Any:
    """A count or width that must be > 0 (ints and floats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive number")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """A count or width that must be an integer > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive integer")
    return value


def check_non_negative(name: str, value: Any) -> int:
    """An integer that may be 0 (``num_classes=0`` means: no classifier, return features)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}={value!r} must be an integer >= 0")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` must be one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name}={value!r} is not an option; choose one of {listed}")
    return value
