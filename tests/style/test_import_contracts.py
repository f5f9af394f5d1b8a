"""The layering of DESIGN.md, as import-linter contracts in pyproject.toml, is kept."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else (shutil.which("lint-imports") or "lint-imports")


def test_pyproject_states_the_layers_contract():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    kinds = {c["type"] for c in config["contracts"]}
    assert {"layers", "forbidden"} <= kinds
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    flat = " ".join(layers)
    for package in ("cli", "run", "analysis", "deploy", "models", "data", "engine", "layers",
                    "utils"):
        assert f"resnetlab.{package}" in flat
    # the registry sits inside models/, below every builder
    inner = [c for c in config["contracts"] if c.get("containers") == ["resnetlab.models"]]
    assert inner and inner[0]["layers"][-1].startswith("registry")


def test_import_contracts_are_kept():
    result = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-3000:]
    assert "BROKEN" not in report and "KEPT" in report
