"""Run directories: ``runs/<name>``, never overwritten."""

from __future__ import annotations

import re
import time
from pathlib import Path

from resnetlab.utils.errors import ConfigError

__all__ = ["new_run_dir", "default_run_name"]


def default_run_name(model: str = "run", data: str | None = None) -> str:
    """``<model>-<data>-<YYYYmmdd-HHMMSS>``; ``folder:/a/b/pets`` contributes ``pets``."""
    parts = [model] + ([_slug(data)] if data else []) + [time.strftime("%Y%m%d-%H%M%S")]
    return "-".join(p for p in parts if p)


def _slug(text: str) -> str:
    text = text.split(":", 1)[-1].rstrip("/\\")
    text = re.split(r"[/\\]", text)[-1]
    text = re.sub(r"\.(csv|tsv)$", "", text)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def new_run_dir(runs_dir: str | Path, name: str | None = None, *, model: str = "run",
                data: str | None = None) -> Path:
    """Create and return ``runs_dir/name``; an existing directory is never reused.

    Without ``name`` the directory is :func:`default_run_name` (``-2``, ``-3``... appended when
    two runs start in the same second).  An explicit ``name`` that exists is a
    :class:`ConfigError`: continue it with ``--resume`` or pick another ``--name``.
    """
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    if name is not None:
        if not name or Path(name).name != name or name in (".", ".."):
            raise ConfigError(f"--name {name!r} must be a plain directory name (no slashes)")
        path = runs_dir / name
        try:
            path.mkdir()
        except FileExistsError:
            raise ConfigError(f"run directory {path} already exists; use --resume {path} "
                              "or another --name") from None
        return path
    base = default_run_name(model, data)
    for attempt in range(1, 1000):
        path = runs_dir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a new run directory under {runs_dir}")
