"""Makes tests/helpers.py importable from the test subfolders (`from helpers import ...`)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
