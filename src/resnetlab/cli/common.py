"""Glue shared by the commands: parsing flags and printing (the work is done by the library)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from resnetlab.utils.errors import ConfigError

__all__ = ["parse_set", "parse_number_list", "pct", "print_table", "console", "dump_json",
           "weights_options"]

def parse_set(items: Sequence[str] | None, flag: str = "--set", typed: bool = False) -> dict[str, Any]:
    """``["width_mult=0.5", "shortcut=B"]`` -> ``{"width_mult": "0.5", ...}``.  Values stay text
    (the config layer parses them) unless ``typed``, which parses them as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} width_mult=0.5")
        value = value.strip()
        if typed:
            try:
                value = yaml.safe_load(value) if value else value
            except yaml.YAMLError:
                pass  # not YAML: keep the text
        out[key.strip()] = value
    return out


def parse_number_list(text: str | None, flag: str) -> list[float] | None:
    """``"30,45"`` -> ``[30.0, 45.0]``; None stays None."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 30,45") from None


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals ("-" when missing)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def console(stderr: bool = False):
    """A rich console; off a terminal (pipes, logs) 120 columns wide so nothing is cut."""
    from rich.console import Console

    out = Console(highlight=False, stderr=stderr)
    return out if out.is_terminal else Console(highlight=False, stderr=stderr, width=120)


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                numbers: bool = True) -> None:
    """A rich table on stdout; ``numbers`` right-aligns every column after the first."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        # the first column holds names and paths: wrap them rather than cut them short
        table.add_column(col, justify="right" if numbers and i else "left",
                         overflow="fold" if i == 0 else "ellipsis")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    console().print(table)


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def weights_options() -> dict[str, Any]:
    """Help texts of the flags that rebuild bare weights (shared by eval and predict)."""
    return {
        "model": "Architecture of bare weights (a registry name); checkpoints name their own.",
        "num_classes": "Classes of bare weights (default: read off the classifier).",
        "in_chans": "Input channels (features for vector models) of bare weights (default: read off the weights).",
        "set": "Model argument KEY=VALUE of bare weights (repeatable), e.g. --set width_mult=0.5.",
    }
