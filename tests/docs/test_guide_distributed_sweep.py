"""Every command in docs/guide/distributed.md and docs/guide/sweep.md runs, shrunk: fewer
trials, a tiny network and a few steps appended (later flags win), a free port for the
rendezvous; in a temporary folder holding the guide's space.yaml."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import needs_fmnist

ROOT = Path(__file__).resolve().parents[2]
GUIDES = {name: ROOT / "docs" / "guide" / f"{name}.md" for name in ("distributed", "sweep")}
SHRINK = ["--max-steps", "2", "--train-size", "512", "--val-size", "100", "--batch-size", "32",
          "--device", "cpu", "--no-download"]
TIMEOUT_S = 400


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def commands(name: str) -> list[str]:
    return [line for block in blocks(GUIDES[name], "bash") for line in block.splitlines()
            if line.strip() and not line.startswith("#")]


def argv(command: str, port: int | None = None) -> list[str]:
    words = shlex.split(command)
    head = {"resnetlab": [sys.executable, "-m", "resnetlab"],
            "torchrun": [sys.executable, "-m", "torch.distributed.run"]}[words[0]]
    if "--trials" in words:
        # one trial each; the --workers command takes the same study on to two
        words[words.index("--trials") + 1] = "2" if "--workers" in words else "1"
    words = [w.replace("127.0.0.1:29500", f"127.0.0.1:{port}") for w in words]
    tiny = ["--model", "mlp_resnet", "--width-mult", "0.0625", "--set", "num_blocks=1",
            "--progressive-sizes", "none"]  # a best config of the default recipe has its sizes
    # a sweep's space may search the model; its trials never draw a progress bar
    model = [] if "sweep" in words else [*tiny, "--no-progress"]
    return head + words[1:] + model + SHRINK


def env() -> dict[str, str]:
    return {**os.environ, "RESNETLAB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{shlex.join(cmd)}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_the_guides_hold_the_commands_tested_here():
    assert commands("distributed") == [
        "resnetlab train --nproc 2 --epochs 2",
        "torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint "
        "127.0.0.1:29500 --rdzv-id demo -m resnetlab train --name two-nodes --epochs 1"]
    assert [c.split(" --")[0] for c in commands("sweep")] == [
        "resnetlab sweep space.yaml", "resnetlab train", "resnetlab sweep space.yaml",
        "resnetlab sweep space.yaml", "resnetlab sweep benchmarks/sweep_default_recipe.yaml"]


@pytest.mark.slow
@needs_fmnist
def test_distributed_guide_commands_run(tmp_path):
    out = run(argv(commands("distributed")[0]), tmp_path)
    assert "run directory" in out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = argv(commands("distributed")[1], port)  # two agents, as in two terminals
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    assert "nodes: 2" in (tmp_path / "runs" / "two-nodes" / "config.yaml").read_text()


@pytest.mark.slow
@needs_fmnist
def test_sweep_guide_commands_run(tmp_path):
    (tmp_path / "space.yaml").write_text(blocks(GUIDES["sweep"], "yaml")[0])
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    sweep, best, workers, journal, recipe = commands("sweep")
    out = run(argv(sweep), tmp_path)
    assert "best config: runs/sweeps/space-best.yaml" in out and "report: runs/sweeps/space.html" in out
    run(argv(best), tmp_path)
    out = run(argv(workers), tmp_path)  # the same study goes on to 2 trials
    assert re.search(r"^trials: (1 complete, 1 pruned|2 complete) ", out, flags=re.M), out[-2000:]
    assert "journal:runs/sweeps/space.journal" in run(argv(journal), tmp_path)
    assert "sweep sweep_default_recipe (val_top1)" in run(argv(recipe), tmp_path)
