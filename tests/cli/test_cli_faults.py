"""Faults through the ``resnetlab`` command: each is one line on stderr and exit status 2, and
leaves the run directory (and its checkpoints) as it was.  Library-level cases are in
test_faults.py."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY as TINY_RUN
from helpers import needs_fmnist
from resnetlab import checkpoint
from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli.app import main
from resnetlab.engine.rundir import LOCK_FILE, lock_run_dir

TINY = [*TINY_RUN, "--no-tta"]  # no flip TTA in the final evaluation: faster



def cli(capsys, *argv) -> tuple[int, str]:
    """Run ``resnetlab ARGV`` in-process; returns (exit status, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    return code, capsys.readouterr().err


def one_line_error(err: str) -> str:
    """The error line; notices before it (e.g. "resuming RUN at step N") are allowed."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in err, err
    return errors[0]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny finished run with a checkpoint at step 2 and 4."""
    runs = tmp_path_factory.mktemp("runs")
    try:
        main(["train", *TINY, "--max-steps", "4", "--checkpoint-every", "2", "--runs-dir",
              str(runs), "--name", "tiny"])
    except SystemExit as stop:
        assert not stop.code, f"training failed with exit status {stop.code}"
    return runs / "tiny"


@pytest.fixture
def unfinished(finished, tmp_path) -> Path:
    """A copy of ``finished`` without results.json: ``--resume`` continues it."""
    run = tmp_path / "tiny"
    shutil.copytree(finished, run)
    (run / "results.json").unlink()
    return run


# ------------------------------------------------------------------ where runs are written


def test_runs_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "runs").write_text("")
    code, err = cli(capsys, "train", *TINY, "--max-steps", "1", "--runs-dir", tmp_path / "runs")
    assert code == 2
    line = one_line_error(err)
    assert f"--runs-dir {tmp_path / 'runs'}" in line and "is a file" in line


@needs_fmnist
def test_read_only_runs_dir(tmp_path, capsys, monkeypatch):
    runs, real_mkdir = tmp_path / "runs", os.mkdir

    def read_only(path, *args, **kwargs):  # tests may run as root, which ignores chmod
        if str(path).startswith(str(runs)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    code, err = cli(capsys, "train", *TINY, "--max-steps", "1", "--runs-dir", runs)
    assert code == 2
    line = one_line_error(err)
    assert "--runs-dir" in line and str(runs) in line and "not writable" in line
    assert not runs.exists()


def test_cache_dir_that_is_a_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                tmp_path / "pics" / label / f"{i}.png")
    (tmp_path / "cache").write_text("")
    code, err = cli(capsys, "train", "--data", f"folder:{tmp_path / 'pics'}", "--model", "resnet20",
                    "--width-mult", "0.25", "--val-size", "4", "--max-steps", "1", "--device", "cpu",
                    "--cache-dir", tmp_path / "cache", "--runs-dir", tmp_path / "runs", "--no-progress")
    assert code == 2
    line = one_line_error(err)
    assert f"--cache-dir {tmp_path / 'cache'}" in line and "a file is in the way" in line
    assert not list((tmp_path / "runs").glob("*/checkpoints"))


@needs_fmnist
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "runs" / "full"
    real_write = checkpoint._write_file

    def disk_fills_after_the_first_save(path, data):  # of checkpoints/last
        if path.parent.name.startswith(".last.tmp") and (run / "checkpoints" / "last").is_dir():
            path.write_bytes(data[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "_write_file", disk_fills_after_the_first_save)
    code, err = cli(capsys, "train", *TINY, "--max-steps", "4", "--checkpoint-every", "2",
                    "--runs-dir", tmp_path / "runs", "--name", "full")
    assert code == 2
    line = one_line_error(err)
    assert "disk full" in line and str(run / "checkpoints" / "last") in line and "unchanged" in line
    monkeypatch.undo()
    last = load_checkpoint(run / "checkpoints" / "last")
    assert last.meta["step"] == 2 and last.train_state is not None
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------ resuming


@needs_fmnist
def test_resume_with_a_corrupt_meta_json_names_it(unfinished, capsys):
    meta = unfinished / "checkpoints" / "last" / "meta.json"
    meta.write_text('{"step": 4, "epo')
    code, err = cli(capsys, "train", "--resume", unfinished, "--no-progress")
    assert code == 2
    line = one_line_error(err)
    assert str(meta) in line and "not valid JSON" in line


@needs_fmnist
def test_resume_with_an_empty_train_state_names_it(unfinished, capsys):
    state = unfinished / "checkpoints" / "last" / "train_state.json"
    state.write_text("{}")
    before = files(unfinished)
    code, err = cli(capsys, "train", "--resume", unfinished, "--no-progress")
    assert code == 2
    line = one_line_error(err)
    assert str(state) in line and "training state is damaged" in line and "optimizer" in line
    assert files(unfinished) == before


@needs_fmnist
def test_a_second_resume_of_a_locked_run_is_refused(unfinished, capsys):
    before = files(unfinished)
    with lock_run_dir(unfinished):  # what a first `train --resume` holds while it trains
        code, err = cli(capsys, "train", "--resume", unfinished, "--no-progress")
        assert code == 2
        line = one_line_error(err)
        assert str(unfinished) in line and f"process {os.getpid()}" in line
        assert {k: v for k, v in files(unfinished).items() if k != LOCK_FILE} == before
    assert not (unfinished / LOCK_FILE).exists()
    code, err = cli(capsys, "train", "--resume", unfinished, "--no-progress")  # now it may
    assert code == 0, err
    rows = (unfinished / "metrics.csv").read_text().splitlines()
    assert len(rows) == len(set(rows))  # no duplicated epoch row
    assert not (unfinished / LOCK_FILE).exists()


# --------------------------------------------------------------------- devices and configs


def test_device_this_machine_lacks(tmp_path, capsys):
    missing = [d for d, ok in (("mps", torch.backends.mps.is_available()),
                               ("cuda", torch.cuda.is_available())) if not ok]
    if not missing:
        pytest.skip("this machine has both CUDA and MPS")
    for device in missing:
        code, err = cli(capsys, "train", "--device", device, "--runs-dir", tmp_path, "--max-steps", "1")
        assert code == 2
        assert f"--device {device}: " in one_line_error(err)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content, fragment", [
    (b"model:\n  name: r\xe9snet20\n", "not a UTF-8 text file"),
    (bytes(range(256)) * 4, "not a UTF-8 text file"),
    (b"\x00\x00\x00\x01 binary", "not valid YAML"),
])
def test_binary_or_non_utf8_config(tmp_path, capsys, content, fragment):
    config = tmp_path / "recipe.yaml"
    config.write_bytes(content)
    code, err = cli(capsys, "train", "--config", config, "--runs-dir", tmp_path / "runs")
    assert code == 2
    line = one_line_error(err)
    assert str(config) in line and fragment in line
    assert not (tmp_path / "runs").exists()
