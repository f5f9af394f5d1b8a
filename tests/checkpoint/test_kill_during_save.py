"""Issue 22, "not yet tried": ``kill -9`` at random points *during* checkpoint saves, 20 times,
each followed by a resume.  The resumed checkpoint is always the previous or the new one, whole
(weights, meta and training state from the same save), never a torn mix.

A helper process imports torch once and then forks one writer per round (before it has run any
torch op, so the fork holds no thread-pool locks; forking pytest itself deadlocked).  Each
writer resumes from the checkpoint and saves new ones back to back, so nearly every instant is
inside a save (write, fsync, rename); it is killed with SIGKILL at a random moment and nothing
in it gets to clean up."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from resnetlab.checkpoint import load_checkpoint

ROUNDS = 20

HELPER = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    import torch
    from resnetlab.checkpoint import load_checkpoint, save_checkpoint

    def resume(ckpt):
        if not ckpt.exists() and not ckpt.with_name(f".{ckpt.name}.old").exists():
            return 0
        return load_checkpoint(ckpt, train_state=True).meta["step"]

    def writer(ckpt, report):
        torch.set_num_threads(1)
        step = resume(ckpt)
        while True:
            step += 1
            value = float(step)
            save_checkpoint(ckpt, model_state={"w": torch.full((512, 512), value),
                                               "b": torch.full((512,), value)},
                            train_state={"step": step, "momentum": torch.full((512, 512), value)},
                            meta={"step": step})
            with open(report, "a") as f:
                f.write(f"{step}\\n")

    for line in sys.stdin:  # "fork CKPT REPORT" -> the writer's pid; "wait PID" -> its status
        cmd, *args = line.split()
        if cmd == "fork":
            pid = os.fork()
            if pid == 0:
                try:
                    writer(Path(args[0]), args[1])
                finally:
                    os._exit(1)
            print(pid, flush=True)
        elif cmd == "wait":
            print(os.waitpid(int(args[0]), 0)[1], flush=True)
''')


def _whole_step(ckpt_dir: Path) -> int:
    """The step of the checkpoint a resume reads, after checking every part is from it."""
    ckpt = load_checkpoint(ckpt_dir, train_state=True)
    step = ckpt.meta["step"]
    assert ckpt.model_state["w"].eq(step).all() and ckpt.model_state["b"].eq(step).all()
    assert ckpt.train_state["step"] == step and ckpt.train_state["momentum"].eq(step).all()
    return step


def _saves(report: Path, at_least: int, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        done = [int(s) for s in report.read_text().split()] if report.exists() else []
        if len(done) >= at_least:
            return done
        if time.monotonic() > deadline:
            pytest.fail(f"the writer reported {len(done)} saves in {timeout} s")
        time.sleep(0.002)


@pytest.mark.slow
def test_sigkill_during_saves_always_resumes_a_whole_checkpoint(tmp_path):
    ckpt_dir, rng = tmp_path / "run" / "checkpoints" / "last", random.Random(0)
    helper = subprocess.Popen([sys.executable, "-c", HELPER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    mid_save, last_seen = 0, 0
    try:
        for round_ in range(ROUNDS):
            report = tmp_path / f"saves-{round_}.txt"
            helper.stdin.write(f"fork {ckpt_dir} {report}\n")
            helper.stdin.flush()
            pid = int(helper.stdout.readline())
            _saves(report, 1)  # resumed and saved once: it is inside the next save now
            time.sleep(rng.uniform(0, 0.03))  # a random point in the following save(s)
            os.kill(pid, signal.SIGKILL)
            helper.stdin.write(f"wait {pid}\n")
            helper.stdin.flush()
            status = int(helper.stdout.readline())
            assert os.WIFSIGNALED(status), f"the writer ended on its own (status {status})"
            done = _saves(report, 1)
            leftovers = [p.name for p in ckpt_dir.parent.iterdir() if p.name != "last"]
            mid_save += bool(leftovers)  # a temp or .old folder: killed inside a save
            step = _whole_step(ckpt_dir)  # what the next round resumes from
            assert step in (done[-1], done[-1] + 1), (step, done[-3:])
            assert step >= last_seen and step > 0
            last_seen = step
    finally:
        helper.stdin.close()
        helper.wait(timeout=60)
    print(f"{mid_save} of {ROUNDS} kills landed inside a save")
    # most kills must have hit a save in progress, or this test tested nothing
    assert mid_save >= ROUNDS // 4, f"only {mid_save} of {ROUNDS} kills landed inside a save"
