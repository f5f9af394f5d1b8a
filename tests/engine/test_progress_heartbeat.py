"""Item 13 of issue 22: off a terminal (CI, notebooks, ``| tee``) ``train`` prints a plain
progress line at least every 10 s, not only at the end of an epoch.  Time is driven by a fake
clock: no test here waits."""

from __future__ import annotations

import itertools

from helpers import TINY, cli, needs_fmnist
from resnetlab.engine import logging as progress


def test_a_line_every_ten_seconds_off_a_terminal(monkeypatch, capsys):
    ticks = itertools.count(0.0, 4.0)  # every clock reading is 4 s after the previous one
    monkeypatch.setattr(progress, "_clock", lambda: next(ticks))
    display = progress.ProgressDisplay(None, total_steps=50, epochs=2)  # capsys: not a tty
    assert display.kind == "lines"
    display.set_position(0, 0)
    display.show_stats(0.5, 0.75, 1234.0)
    for _ in range(12):
        display.advance()
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    # 12 steps x (one reading of 4 s) ~ 48 s: a line at least every 10 s of that
    assert len(lines) >= 4
    assert lines[0].startswith("epoch 1/2  step ") and "loss 0.5000" in lines[0]
    assert "/50" in lines[0] and "elapsed" in lines[0]


def test_silent_when_asked_and_quiet_within_ten_seconds(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_clock", lambda: 0.0)
    for mode in (None, False):
        display = progress.ProgressDisplay(mode, total_steps=5, epochs=1)
        for _ in range(5):
            display.advance()
    assert capsys.readouterr().err == ""


def test_tracked_pass_prints_while_running(monkeypatch, capsys):
    ticks = itertools.count(0.0, 6.0)
    monkeypatch.setattr(progress, "_clock", lambda: next(ticks))
    assert list(progress.tracked(range(6), "final test evaluation", None)) == list(range(6))
    err = capsys.readouterr().err
    assert "final test evaluation: 2 batches" in err and err.count("\n") >= 4


@needs_fmnist
def test_train_piped_prints_step_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress.ProgressDisplay, "HEARTBEAT_S", 0.0)  # a line every step
    args = [a for a in TINY if a != "--no-progress"]
    code, _, err = cli(capsys, "train", *args, "--max-steps", "3", "--test-size", "100",
                       "--runs-dir", tmp_path)
    assert code == 0, err
    assert "epoch 1/" in err and "step 3/3" in err
