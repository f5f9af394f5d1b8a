"""The ``resnetlab`` command.  This module only registers commands; each lives in its own module.

Command modules keep heavy imports (torch, models, data) inside the command function, so
``resnetlab --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from resnetlab.utils.errors import UserError
from resnetlab.utils.notices import configure

app = typer.Typer(
    name="resnetlab",
    help="Residual networks on PyTorch: build, train, understand, transfer and ship ResNets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module under resnetlab.cli, command name).  Each module defines ``command``.
COMMANDS: list[tuple[str, str]] = [
    ("models", "models"),
    ("train", "train"),
    ("eval", "eval"),
    ("predict", "predict"),
    ("export", "export"),
    ("report", "report"),
    ("convert", "convert"),
    ("finetune", "finetune"),
    ("compare", "compare"),
    ("serve", "serve"),
    ("sweep", "sweep"),
]


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Notices off (warnings and errors only)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug notices too."),
    log_json: bool = typer.Option(False, "--log-json", help="Notices as JSON lines on stderr."),
) -> None:
    """Residual networks on PyTorch: build, train, understand, transfer and ship ResNets."""
    # A callback keeps Typer in multi-command mode even if only one command were registered.
    configure(quiet=quiet, verbose=verbose, json_lines=log_json)  # one channel: utils.notices


for module_name, command_name in COMMANDS:
    module = importlib.import_module(f"resnetlab.cli.{module_name}")
    app.command(command_name)(module.command)
app.add_typer(importlib.import_module("resnetlab.cli.analyze").app, name="analyze")  # a group


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2.  Under torchrun the
    line names the rank, and a rank that only lost its peers (another rank failed first) says
    so in one line instead of a traceback, so the failed rank's own line is the one to read."""
    from resnetlab.cli import mark_command_start

    mark_command_start()
    try:
        app(args=argv, standalone_mode=True)
    except UserError as err:
        print(f"error{_rank()}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except RuntimeError as err:
        from resnetlab.run.worker import lost_peer

        if not _rank() or not lost_peer(err):
            raise  # a bug: keep the traceback
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        print(f"error{_rank()}: lost contact with another rank ({first}); the rank that "
              "failed first says why", file=sys.stderr)
        raise SystemExit(1) from None


def _rank() -> str:
    """`` (rank 1)`` inside a multi-process torchrun job, else nothing."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and os.environ.get("RANK"):
        return f" (rank {os.environ['RANK']})"
    return ""
