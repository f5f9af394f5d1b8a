"""Shared pytest setup: tests/ is importable (``from helpers import ...``) from every subfolder."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
