"""The one channel for messages to the user: :func:`say`.

Every notice (a resumed run, a fine-tune's weight transplant, a time budget's plan, a changed
run name) goes through the ``resnetlab.notice`` logger, which writes the bare message to the
*current* ``sys.stderr`` (so pytest's capture and redirected streams see it).  :func:`configure`
makes the channel quiet (warnings and errors only), verbose, or JSON lines, the same for every
command; a library user can attach their own handlers to ``resnetlab.notice`` instead.
"""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["say", "configure", "LOGGER"]

LOGGER = "resnetlab.notice"


class _CurrentStderr(logging.Handler):
    """Writes each record to whatever ``sys.stderr`` is at the time (not the one at import)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"level": record.levelname.lower(), "message": record.getMessage()})


def _logger() -> logging.Logger:
    log = logging.getLogger(LOGGER)
    if not log.handlers:  # first use: the default channel, plain lines on stderr
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def say(text: str, level: int = logging.INFO) -> None:
    """Tell the user ``text`` (one line), on stderr unless the channel is configured otherwise."""
    _logger().log(level, text)


def configure(*, quiet: bool = False, verbose: bool = False, json_lines: bool = False) -> None:
    """``quiet``: warnings and errors only; ``verbose``: debug notices too; ``json_lines``: each
    notice as ``{"level": ..., "message": ...}``."""
    log = _logger()
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    for handler in log.handlers:
        handler.setFormatter(_JsonFormatter() if json_lines else logging.Formatter("%(message)s"))
