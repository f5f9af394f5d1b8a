"""Shared test setup: tests/ on sys.path, so every test file (in any subfolder) can
``from helpers import ...``.  Test files never import each other; what they share lives in
helpers.py (functions, constants) or here (fixtures)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))


@pytest.fixture(autouse=True, scope="session")
def _commands_count_from_their_own_start():
    """A real process's first command counts its time budget from the import of resnetlab.cli;
    in-process test commands count from their own start, whichever test runs first (else a
    10 s budget is spent by the collection when a budget test runs first)."""
    import resnetlab.cli

    resnetlab.cli._FIRST = False
