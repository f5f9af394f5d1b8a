"""Thin commands: parse -> build -> call the library -> print."""

import time

# When the command started, before torch is imported: ``resnetlab train --time-budget``
# counts the whole process from here.
STARTED = time.perf_counter()
_FIRST = True


def mark_command_start() -> None:
    """Called by each command line :func:`~resnetlab.cli.app.main` runs: the process's first
    counts from the import above; another one in the same process (tests, notebooks) from now."""
    global STARTED, _FIRST
    if _FIRST:
        _FIRST = False
    else:
        STARTED = time.perf_counter()
