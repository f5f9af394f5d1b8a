"""Durations a user types (``5m``, ``90s``, ``1h30m``, ``300``) and how they are shown."""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration", "format_duration"]

_UNITS = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0, "": 1.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|min|m|s|)")


def parse_duration(value: float | int | str) -> float:
    """Seconds in ``value``: a number (seconds) or text such as ``5m``, ``4.5min``, ``90s``,
    ``1h30m``.  Raises ``ValueError`` (with the accepted forms) for anything else or for a
    duration that is not positive and finite."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; use e.g. 5m, 90s or 300")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower().replace(" ", "")
        parts = list(_PART.finditer(text))
        if not parts or "".join(p.group(0) for p in parts) != text or \
                (len(parts) > 1 and any(p.group(2) == "" for p in parts)):
            raise ValueError(f"{value!r} is not a duration; use e.g. 5m, 90s, 1h30m or 300 (seconds)")
        seconds = sum(float(p.group(1)) * _UNITS[p.group(2)] for p in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be a finite time > 0, e.g. 5m")
    return seconds


def format_duration(seconds: float) -> str:
    """``300`` -> ``5 min``, ``270`` -> ``4.5 min``, ``45`` -> ``45 s``."""
    tenths = seconds / 6  # tenths of a minute
    if seconds >= 60 and abs(tenths - round(tenths)) < 1e-9:
        return f"{round(tenths) / 10:g} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.3g} s"
