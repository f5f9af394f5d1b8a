"""Puts tests/ on sys.path, so tests in subfolders can import helpers.py."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
