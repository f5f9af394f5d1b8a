"""Issue 22, "not yet tried": after ``kill -9`` and a resume (twice here, the second time
killing the resumed process), the final metrics in results.json equal an uninterrupted run with
the same seed (``--deterministic``, CPU), and so do the weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch

from helpers import write_grey_classes

STEPS_PER_EPOCH = 8  # 128 training images / batch 16
KILLS_AT = (6, 13)  # logged steps: in epoch 1 and in epoch 2 (of 3)


def _images(root: Path) -> Path:
    return write_grey_classes(root, per_class=40, side=12)


def _train(data: Path, runs: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "resnetlab", "train", "--data", f"folder:{data}",
            "--model", "resnet20", "--width-mult", "0.25", "--val-size", "32",
            "--batch-size", "16", "--epochs", "3", "--checkpoint-every", "2", "--log-every", "1",
            "--deterministic", "--device", "cpu", "--precision", "fp32", "--seed", "3",
            "--no-progress", "--runs-dir", str(runs), "--name", name]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two runs overlap on a small machine
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def _logged_step(run_dir: Path) -> int:
    path = run_dir / "steps.csv"
    lines = path.read_text().splitlines()[1:] if path.exists() else []
    for line in reversed(lines):
        try:
            return int(line.split(",")[0])
        except ValueError:
            continue  # a row cut short by the kill
    return 0


def _kill_at(proc: subprocess.Popen, run_dir: Path, step: int, log: Path) -> None:
    deadline = time.monotonic() + 300
    while _logged_step(run_dir) < step:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before step {step}:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run made no progress in 300 s")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def _results(run_dir: Path) -> dict:
    keep = ("top1", "top5", "loss", "val_top1", "per_class", "confusion", "steps", "epochs",
            "best_epoch", "num_samples")
    results = json.loads((run_dir / "results.json").read_text())
    return {k: results[k] for k in keep}


@pytest.mark.slow
def test_killed_twice_and_resumed_ends_with_the_uninterrupted_results(tmp_path):
    data, runs = _images(tmp_path / "images"), tmp_path / "runs"
    straight = _start(_train(data, runs, "straight"), tmp_path / "straight.log")
    proc, log = _start(_train(data, runs, "killed"), tmp_path / "killed.log"), tmp_path / "killed.log"
    for n, step in enumerate(KILLS_AT):
        _kill_at(proc, runs / "killed", step, log)
        log = tmp_path / f"resume{n}.log"
        proc = _start([sys.executable, "-m", "resnetlab", "train", "--resume",
                       str(runs / "killed"), "--no-progress"], log)
    assert proc.wait(600) == 0, log.read_text()[-3000:]
    assert straight.wait(600) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    assert "resuming" in (tmp_path / "resume0.log").read_text()
    assert _results(runs / "killed") == _results(runs / "straight")
    a, b = (safetensors.torch.load_file(runs / r / "checkpoints" / "last" / "model.safetensors")
            for r in ("straight", "killed"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
