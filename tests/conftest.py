"""Shared test setup: tests/ on sys.path, so every test file (in any subfolder) can
``from helpers import ...``.  Test files never import each other; what they share lives in
helpers.py (functions, constants) or here (fixtures)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
