"""A run killed with SIGKILL in the middle of an epoch and resumed with ``resnetlab train
--resume`` ends with bit-identical weights to an uninterrupted run (CPU, deterministic mode).

Real subprocesses and a real ``kill -9``: nothing in the trainer gets a chance to clean up, so
this checks the atomic checkpoints, the saved position inside the epoch, and the restored
optimiser, schedule and RNG states together.
"""

from __future__ import annotations

import csv
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

STEPS_PER_EPOCH = 14  # 224 training images / batch 16
EPOCHS = 4
KILL_AFTER_STEP = 20  # in epoch 2 (steps 15..28), past the checkpoint at step 18


def write_images(root: Path) -> Path:
    """4 classes x 64 grey 16x16 images whose brightness depends on the class."""
    return write_grey_classes(root, per_class=64, side=16)


def train_cmd(data: Path, runs: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "resnetlab", "train", "--data", f"folder:{data}",
            "--model", "resnet20", "--width-mult", "0.25", "--shortcut", "B",
            "--val-size", "32", "--batch-size", "16", "--epochs", str(EPOCHS),
            "--checkpoint-every", "3", "--log-every", "1", "--deterministic", "--device", "cpu",
            "--lr", "0.05", "--seed", "7", "--no-progress", "--no-download", "--runs-dir", str(runs),
            "--name", name]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    # One thread each: the two runs overlap, and OpenMP threads that outnumber the cores stall
    # for seconds at their barriers on a busy machine.
    env = {**os.environ, "RESNETLAB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def last_logged_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "steps.csv").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines[1:]):
        try:
            return int(line.split(",")[0])
        except ValueError:
            continue  # a row cut short mid-write
    return 0


def kill_mid_epoch(proc: subprocess.Popen, run_dir: Path, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while last_logged_step(run_dir) < KILL_AFTER_STEP:
        if proc.poll() is not None:
            pytest.fail(f"run ended (status {proc.returncode}) before it could be killed:\n"
                        f"{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("run made no progress")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    assert proc.wait(timeout) == 0, log.read_text()[-3000:]


def weights(run_dir: Path) -> dict:
    return safetensors.torch.load_file(run_dir / "checkpoints" / "last" / "model.safetensors")


def column(run_dir: Path, file: str, key: str) -> list[str]:
    with open(run_dir / file, newline="") as fh:
        return [row[key] for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    data, runs = write_images(tmp_path / "images"), tmp_path / "runs"
    straight = start(train_cmd(data, runs, "straight"), tmp_path / "straight.log")
    killed = start(train_cmd(data, runs, "killed"), tmp_path / "killed.log")
    kill_mid_epoch(killed, runs / "killed", tmp_path / "killed.log")
    meta = json.loads((runs / "killed" / "checkpoints" / "last" / "meta.json").read_text())
    assert 0 < meta["step"] < STEPS_PER_EPOCH * EPOCHS
    assert meta["step"] % STEPS_PER_EPOCH != 0, "the kill should land inside an epoch"
    assert last_logged_step(runs / "killed") > meta["step"]  # steps were lost and are redone

    resumed = start([sys.executable, "-m", "resnetlab", "train", "--resume", str(runs / "killed"),
                     "--no-progress"], tmp_path / "resumed.log")
    finish(resumed, tmp_path / "resumed.log")
    finish(straight, tmp_path / "straight.log")
    assert f"resuming {runs / 'killed'} at step {meta['step']}" in (
        tmp_path / "resumed.log").read_text().replace("\n", "")

    a, b = weights(runs / "straight"), weights(runs / "killed")
    assert a.keys() == b.keys() and len(a) > 50
    different = [k for k in a if not (a[k].dtype == b[k].dtype and a[k].equal(b[k]))]
    assert not different, f"weights differ after resume: {different[:5]}"
    for file, key in (("steps.csv", "loss"), ("metrics.csv", "train_loss"),
                      ("metrics.csv", "val_loss")):
        assert column(runs / "killed", file, key) == column(runs / "straight", file, key), key
    assert len(column(runs / "killed", "steps.csv", "step")) == STEPS_PER_EPOCH * EPOCHS
