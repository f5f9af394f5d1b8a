"""Shared test helpers (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from typing import Any

from resnetlab.data import build_data
from resnetlab.engine.config import DataConfig

_RUN_SIDE = ("seed", "device", "channels_last", "in_chans")


def build(name: str, **kwargs: Any):
    """``build_data`` with a ``DataConfig(name=name, ...)`` built from ``kwargs``; ``seed``,
    ``device``, ``channels_last`` and ``in_chans`` go to ``build_data`` itself."""
    run = {k: kwargs.pop(k) for k in _RUN_SIDE if k in kwargs}
    return build_data(DataConfig(name=name, **kwargs), **run)


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``resnetlab ARGV`` in-process; returns (exit status, stdout, stderr)."""
    from resnetlab.cli.app import main

    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The one ``error: ...`` line a user error prints (anything more fails the test)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]
