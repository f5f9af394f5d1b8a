"""Every command in docs/guide/evidence.md runs as written, shrunk where it trains (later flags
override earlier ones in argparse, so the shrinking flags are appended)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide" / "evidence.md"
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SHRINK = {  # script -> flags that make it a seconds-to-minutes smoke run
    "mlp_depth.py": ["--blocks", "2", "--seeds", "1", "--epochs", "1", "--width", "16"],
    "tables.py": ["--tables", "iris", "--folds", "2", "--epochs", "1", "--variants", "defaults"],
    "transfer.py": ["--quick", "--device", "cpu", "--jobs", "1", "--targets", "digits",
                    "--sizes", "1", "--min-steps", "2", "--max-steps", "2"],
}


def _commands() -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", GUIDE.read_text(), re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("python ")]


def test_the_guide_has_the_three_benchmarks():
    scripts = {shlex.split(c)[1] for c in _commands()}
    assert scripts == {"benchmarks/mlp_depth.py", "benchmarks/transfer.py", "benchmarks/tables.py"}


@pytest.mark.slow
@pytest.mark.parametrize("command", _commands())
def test_guide_command_runs(command, tmp_path):
    argv = shlex.split(command)
    script = Path(argv[1]).name
    if script == "transfer.py" and not FASHION.exists():
        pytest.skip("Fashion-MNIST is not installed")
    argv = [sys.executable, *argv[1:], *SHRINK[script], "--out", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "|---|" in done.stdout  # every script prints a markdown table
    if script == "transfer.py":
        assert (tmp_path / "out" / "transfer_curve.json").is_file()
        assert (tmp_path / "out" / "transfer_curve.png").is_file()
