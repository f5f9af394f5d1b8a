"""Faults a user or the machine can cause, library level: non-finite weights never become a
checkpoint, a full disk keeps the previous one, damaged checkpoint files and configs are named,
run directories are locked, missing devices are one line.  The same faults through the
``resnetlab`` command are in test_cli_faults.py."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from resnetlab import checkpoint
from resnetlab.checkpoint import load_checkpoint, read_meta, save_checkpoint
from resnetlab.engine.config import RunConfig
from resnetlab.engine.guard import NonFiniteGuard
from resnetlab.engine.metrics import StepStat
from resnetlab.engine.rundir import LOCK_FILE, lock_run_dir, new_run_dir
from resnetlab.utils.device import resolve_device
from resnetlab.utils.errors import (
    ConfigError,
    DataError,
    NonFiniteError,
    RunLockedError,
    StorageError,
    UserError,
)


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and isinstance(err, UserError), text
    return text


@pytest.fixture
def saved(tmp_path):
    """``checkpoints/last`` of a finite network at step 1, with a training state."""
    ck = tmp_path / "run" / "checkpoints" / "last"
    save_checkpoint(ck, model_state=net().state_dict(), meta={"step": 1},
                    train_state={"progress": {"step": 1}, "momentum": torch.ones(3)})
    return ck


# ------------------------------------------------------------------ non-finite weights


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_weight_is_refused_and_the_previous_checkpoint_survives(saved, bad):
    before = snapshot(saved.parent)
    model = net(1)
    with torch.no_grad():
        model[3].weight[0, 5] = bad
    with pytest.raises(NonFiniteError) as caught:
        save_checkpoint(saved, model_state=model.state_dict(), meta={"step": 2},
                        train_state={"progress": {"step": 2}})
    line = one_line(caught.value)
    assert str(saved) in line and "1 of 9 weight tensors (3.weight)" in line
    assert "previous checkpoint" in line and "unchanged" in line
    assert snapshot(saved.parent) == before  # nothing written, not even a temp dir
    assert load_checkpoint(saved).meta["step"] == 1


def test_a_nan_in_the_training_state_is_refused(saved):
    before = snapshot(saved.parent)
    with pytest.raises(NonFiniteError, match=r"1 training-state tensors \(momentum\)"):
        save_checkpoint(saved, model_state=net().state_dict(), meta={"step": 2},
                        train_state={"progress": {"step": 2}, "momentum": torch.tensor([1.0, float("nan")])})
    assert snapshot(saved.parent) == before


def test_integer_tensors_are_not_checked_and_the_check_can_be_turned_off(tmp_path):
    state = {"w": torch.tensor([float("nan")]), "count": torch.tensor([7])}
    save_checkpoint(tmp_path / "ck", model_state=state, meta={}, check_finite=False)
    assert torch.isnan(load_checkpoint(tmp_path / "ck").model_state["w"]).all()
    save_checkpoint(tmp_path / "ok", model_state={"count": torch.tensor([7])}, meta={})


def _guard_message(last_good: Path | None) -> str:
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = NonFiniteGuard(model, opt, torch.amp.GradScaler("cpu", enabled=False), 1, lambda s: 0.1)
    with pytest.raises(UserError) as caught:
        guard.observe([StepStat(step=7, size=4, loss=float("nan"), hits=0.0)], last_good)
    return one_line(caught.value)


def test_the_guard_calls_only_a_finite_checkpoint_good(saved, tmp_path):
    assert f"the last good checkpoint is {saved}" in _guard_message(saved)
    poisoned = tmp_path / "poisoned"
    state = net().state_dict()
    state["3.bias"] = torch.full_like(state["3.bias"], float("nan"))
    save_checkpoint(poisoned, model_state=state, meta={}, check_finite=False)  # an old run's
    line = _guard_message(poisoned)
    assert "last good" not in line and "holds NaN/inf weights too" in line
    assert "no checkpoint was saved yet" in _guard_message(None)


# ----------------------------------------------------------------------------- disk full


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(saved, monkeypatch):
    before = snapshot(saved.parent)
    written = []

    def fills_the_disk(path, data):
        if written:  # the first file fits, the second hits the end of the disk
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(path)
        path.write_bytes(data)

    monkeypatch.setattr(checkpoint, "_write_file", fills_the_disk)
    with pytest.raises(StorageError) as caught:
        save_checkpoint(saved, model_state=net(2).state_dict(), meta={"step": 2},
                        train_state={"progress": {"step": 2}})
    line = one_line(caught.value)
    assert line.startswith(f"{saved}: ") and "disk full" in line and "unchanged" in line
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert snapshot(saved.parent) == before
    assert load_checkpoint(saved).meta["step"] == 1


def test_a_file_where_the_checkpoint_folder_belongs_is_one_line(tmp_path):
    (tmp_path / "checkpoints").write_text("not a folder")
    with pytest.raises(StorageError, match="a file is in the way"):
        save_checkpoint(tmp_path / "checkpoints" / "last", model_state=net().state_dict(), meta={})


# --------------------------------------------------------------- damaged checkpoint files


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", b"\xff\xfe\x00binary"])
def test_a_damaged_meta_json_is_named(saved, text):
    meta = saved / "meta.json"
    meta.write_bytes(text if isinstance(text, bytes) else text.encode())
    for read in (read_meta, load_checkpoint):
        with pytest.raises(DataError) as caught:
            read(saved)
        assert str(meta) in one_line(caught.value)


@pytest.mark.parametrize("text, fragment", [
    ("{}", "missing momentum, progress"),
    ('{"progress": {"step": 1}}', "missing momentum"),
    ("[]", "missing momentum, progress"),
    ('{"progress": {"__tensor__": "gone"}}', "damaged"),
])
def test_a_damaged_train_state_json_is_named(saved, text, fragment):
    (saved / "train_state.json").write_text(text)
    with pytest.raises(DataError) as caught:
        load_checkpoint(saved)
    line = one_line(caught.value)
    assert str(saved / "train_state.json") in line and fragment in line
    assert load_checkpoint(saved, train_state=False).meta["step"] == 1  # weights still load


# ------------------------------------------------------------------------- run-dir lock


def test_a_second_lock_on_a_run_dir_names_the_dir_and_the_pid(tmp_path):
    with lock_run_dir(tmp_path) as held:
        assert held == tmp_path
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(RunLockedError) as caught, lock_run_dir(tmp_path):
            pass
        line = one_line(caught.value)
        assert str(tmp_path) in line and f"process {os.getpid()}" in line
        assert (tmp_path / LOCK_FILE).is_file()  # the refused attempt left the lock alone
    assert not (tmp_path / LOCK_FILE).exists()  # released on exit


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt), lock_run_dir(tmp_path):
        raise KeyboardInterrupt
    assert not (tmp_path / LOCK_FILE).exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("content", ["pid", "garbage"])
def test_a_stale_lock_is_taken_over_with_a_notice(tmp_path, content):
    text = (json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "since": 0})
            if content == "pid" else "\x00 half-written")
    (tmp_path / LOCK_FILE).write_text(text)
    os.utime(tmp_path / LOCK_FILE, (0, 0))  # an old file, not one being written right now
    notices: list[str] = []
    with lock_run_dir(tmp_path, notify=notices.append):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(notices) == 1 and "stale lock" in notices[0] and str(tmp_path) in notices[0]
    assert not list(tmp_path.iterdir())  # no lock and no set-aside copy left behind


def test_a_lock_being_written_right_now_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text("")  # created a moment ago, its pid not written yet
    with pytest.raises(RunLockedError, match="being locked by another process"), lock_run_dir(tmp_path):
        pass
    assert (tmp_path / LOCK_FILE).exists()


def test_a_lock_from_another_host_counts_as_held(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere-0"}))
    with pytest.raises(RunLockedError, match="on host elsewhere-0"), lock_run_dir(tmp_path):
        pass


def test_two_processes_cannot_hold_one_run(tmp_path):
    code = ("import sys, time; from resnetlab.engine.rundir import lock_run_dir\n"
            "with lock_run_dir(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"), lock_run_dir(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    with lock_run_dir(tmp_path, notify=lambda line: None):  # killed: its lock is stale now
        pass


# ---------------------------------------------------------------------- run directories


def test_runs_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "runs").write_text("")
    with pytest.raises(StorageError) as caught:
        new_run_dir(tmp_path / "runs", "x")
    assert "--runs-dir" in one_line(caught.value) and "is a file" in str(caught.value)


@pytest.mark.parametrize("code, fragment", [(errno.EROFS, "not writable"),
                                            (errno.EACCES, "not writable"),
                                            (errno.ENOSPC, "disk full")])
def test_unwritable_runs_dir_is_one_line(tmp_path, monkeypatch, code, fragment):
    real_mkdir = os.mkdir

    def refuses(path, *args, **kwargs):  # root ignores chmod, so refuse like a read-only mount
        if str(path).startswith(str(tmp_path / "runs")):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refuses)
    for name in ("x", None):
        with pytest.raises(StorageError) as caught:
            new_run_dir(tmp_path / "runs", name)
        line = one_line(caught.value)
        assert fragment in line and str(tmp_path / "runs") in line


# ------------------------------------------------------------------------------ devices


@pytest.mark.parametrize("spec, available", [
    ("mps", lambda: torch.backends.mps.is_available()),
    ("cuda", torch.cuda.is_available),
    ("cuda:0", torch.cuda.is_available),
])
def test_a_device_this_machine_lacks_is_one_line(spec, available):
    if available():
        pytest.skip(f"{spec} is available here")
    with pytest.raises(ConfigError) as caught:
        resolve_device(spec)
    assert one_line(caught.value).startswith(f"--device {spec}: ") and "--device cpu" in str(caught.value)


def test_a_gpu_index_past_the_last_gpu_and_a_non_device_are_one_line():
    with pytest.raises(ConfigError, match="--device cuda:99"):
        resolve_device("cuda:99")
    with pytest.raises(ConfigError, match="'gpu0' is not a device"):
        resolve_device("gpu0")
    assert resolve_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("content, fragment", [
    (b"model:\n  name: r\xe9snet20\n", "not a UTF-8 text file"),  # Latin-1
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a UTF-8 text file"),
    (b"\x00\x01\x02 plain bytes", "not valid YAML"),
])
def test_a_non_utf8_or_binary_config_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_yaml(path)
    line = one_line(caught.value)
    assert line.startswith(str(path)) and fragment in line


def test_a_folder_given_as_config_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config"):
        RunConfig.from_yaml(tmp_path)


# ------------------------------------------------------------- a whole fit that diverges


class Batches:
    """Eight fixed batches of 2x6x6 "images" in 4 classes, resumable at any batch."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(8, 16, 2, 6, 6, generator=g), torch.arange(128).view(8, 16) % 4

    def __len__(self) -> int:
        return 8

    def epoch(self, epoch: int, start: int = 0):
        return iter(list(zip(self.x, self.y, strict=True))[start:])


class PoisonedAt(nn.Module):
    """Writes NaN into its first weight at training forward ``at`` (what ``--lr nan`` or
    ``--weight-decay nan`` did to the weights after one step)."""

    def __init__(self, at: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(64, 4))
        self.at, self.calls = at, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                with torch.no_grad():
                    self.net[0].weight.fill_(float("nan"))
        return self.net(x)


def test_fit_never_writes_nan_weights_and_keeps_the_last_finite_checkpoint(tmp_path):
    from resnetlab.engine import fit

    cfg = RunConfig()
    cfg.train.device, cfg.train.precision, cfg.train.epochs = "cpu", "fp32", 2
    cfg.train.checkpoint_every, cfg.train.max_nonfinite_steps = 4, 1000  # the guard never stops it
    torch.manual_seed(0)
    with pytest.raises(NonFiniteError) as caught:
        fit(PoisonedAt(6), Batches(), [next(Batches().epoch(0))], cfg, tmp_path / "run",
            num_classes=4, progress=False)
    line = one_line(caught.value)
    # the epoch-end save at step 8 is refused (best has no earlier save; last has step 4's)
    assert re.search(r"checkpoints/(best: .* nothing was written|last: .* previous checkpoint "
                     r"there is unchanged)", line), line
    assert "checkpoint not saved" in line and "weight tensors (net.0.weight" in line
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert last.meta["step"] == 4  # the step-4 save survived the refused step-8 one
    for ckpt in (tmp_path / "run" / "checkpoints").iterdir():
        weights = load_checkpoint(ckpt, train_state=False).model_state
        assert all(torch.isfinite(t).all() for t in weights.values()), ckpt
