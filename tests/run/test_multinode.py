"""Multi-node torchrun on one machine: two torchrun *agents* started as two separate launcher
processes (as two machines would start them), meeting at a c10d rendezvous on a free local
port, one gloo worker each.

A "node" that dies is its agent and its worker killed together (torchrun starts workers in
their own session, so killing the agent alone would leave its worker running, unlike a machine
that loses power).  Every subprocess has a timeout, so a hang fails the test instead of
stalling the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml

from helpers import cli, write_table

TIMEOUT_S = 240  # per job: the shared 2-core CI machine runs the whole suite beside it
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                 reason="finds a node's processes through /proc")]



def train_flags(table: Path, runs: Path, name: str, *extra: str) -> list[str]:
    # 128 rows - 32 validation = 96 training rows: 6 steps per epoch at the global batch 16
    return ["--data", f"csv:{table}", "--target", "label", "--model", "mlp_resnet",
            "--width-mult", "0.0625", "--set", "num_blocks=1", "--drop-rate", "0",
            "--val-size", "32", "--batch-size", "8", "--epochs", "2", "--sync-bn",
            "--device", "cpu", "--precision", "fp32", "--deterministic", "--no-progress",
            "--no-tta", "--seed", "3", "--log-every", "1", "--runs-dir", str(runs),
            "--name", name, *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent(port: int, run_id: str, nnodes: str, host: bool, args: list[str], *,
          max_restarts: int = 0) -> list[str]:
    """One node's launcher: ``torchrun --nnodes N --nproc-per-node 1 --rdzv-backend c10d ...``.
    ``is_host`` says which agent serves the rendezvous store (the head node on a cluster)."""
    conf = f"is_host={int(host)},last_call_timeout=8,keep_alive_interval=1,keep_alive_max_attempt=3"
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", nnodes,
            "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id, "--rdzv-conf", conf,
            f"--max-restarts={max_restarts}", "--monitor-interval", "0.5",
            "-m", "resnetlab", "train", *args]


def start(cmd: list[str], tag: str) -> subprocess.Popen:
    env = {**os.environ, "RESNETLAB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "RESNETLAB_DIST_TIMEOUT": "60", "NODE_TAG": tag}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(*procs: subprocess.Popen) -> list[str]:
    """Each agent's output once it has ended; whatever is left after the timeout is killed."""
    try:
        return [proc.communicate(timeout=TIMEOUT_S)[0] for proc in procs]
    finally:
        for proc in procs:
            kill_node(proc._node_tag)


def kill_node(tag: str) -> int:
    """SIGKILL every process of the node ``tag`` (the agent and its worker); returns how many."""
    killed = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"NODE_TAG={tag}".encode() in entries:
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def two_nodes(args_a: list[str], args_b: list[str], nnodes: str = "2", max_restarts: int = 0):
    port, run_id = free_port(), uuid.uuid4().hex[:8]
    procs = []
    for host, args in ((True, args_a), (False, args_b)):
        tag = uuid.uuid4().hex
        proc = start(agent(port, run_id, nnodes, host, args, max_restarts=max_restarts), tag)
        proc._node_tag = tag
        procs.append(proc)
    return procs


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(run_dir / "checkpoints" / "last" / "model.safetensors")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_nodes_match_one_node_with_two_processes(tmp_path, capsys):
    table, runs = write_table(tmp_path / "t.csv"), tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "resnetlab", "train",
                           *train_flags(table, runs, "one"), "--nproc", "2"],
                          env={**os.environ, "RESNETLAB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    procs = two_nodes(train_flags(table, runs, "two"), train_flags(table, runs, "two"))
    outs = finish(*procs)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    w1, w2 = weights(runs / "one"), weights(runs / "two")
    assert w1.keys() == w2.keys() and any("norm" in k for k in w1)
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], atol=1e-5, rtol=0, msg=key)
    for r1, r2 in zip(metrics(runs / "one"), metrics(runs / "two"), strict=True):
        assert r2["val_loss"] == pytest.approx(r1["val_loss"], abs=1e-5)
    # how each ran is recorded, in config.yaml and results.json
    saved = yaml.safe_load((runs / "two" / "config.yaml").read_text())["distributed"]
    assert saved == {"world_size": 2, "nodes": 2, "procs_per_node": 1, "global_batch": 16}
    one = json.loads((runs / "one" / "results.json").read_text())["distributed"]
    assert one == {"world_size": 2, "nodes": 1, "procs_per_node": 2, "global_batch": 16}
    # the saved config run again on one process says what differs, in one line
    code, _, err = cli(capsys, "train", "--config", runs / "two" / "config.yaml", "--name", "again",
                       "--max-steps", "1", "--no-progress")
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: this config ran on")]
    assert notes == ["note: this config ran on 2 processes on 2 nodes (global batch 16); this run "
                     "is 1 process on 1 node (global batch 8), so it will differ (to reproduce it: "
                     "torchrun --nnodes 2 --nproc-per-node 1 on each node "
                     "(docs/guide/distributed.md))"], err


def wait_for_step(run_dir: Path, step: int, procs: list[subprocess.Popen], deadline: float) -> None:
    while True:
        path = run_dir / "steps.csv"
        rows = path.read_text().splitlines()[1:] if path.exists() else []
        if rows and rows[-1].split(",")[0].isdigit() and int(rows[-1].split(",")[0]) >= step:
            return
        assert all(p.poll() is None for p in procs), "a node ended before it could be killed"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.05)


def test_elastic_job_goes_on_with_the_survivor_when_a_node_dies(tmp_path):
    table, runs = write_table(tmp_path / "t.csv", rows=256), tmp_path / "runs"
    # 224 training rows: 14 steps per epoch on 2 nodes (global batch 16), 28 on one
    args = train_flags(table, runs, "e", "--epochs", "4", "--checkpoint-every", "4")
    procs = two_nodes(args, args, nnodes="1:2", max_restarts=2)
    try:
        wait_for_step(runs / "e", 9, procs, time.monotonic() + TIMEOUT_S)
        assert kill_node(procs[1]._node_tag) >= 2  # the agent and its worker: a machine is gone
        out = procs[0].communicate(timeout=TIMEOUT_S)[0]
    finally:
        for proc in procs:
            kill_node(proc._node_tag)
    assert procs[0].returncode == 0, out[-4000:]
    assert "torchrun restart 1: resuming" in out, out[-4000:]
    resumed = re.search(r"resuming \S+ at step (\d+)", out)
    assert resumed and int(resumed[1]) >= 8, out[-4000:]  # the checkpoint of step 8 survived
    assert "resuming a 2-process checkpoint on 1" in out
    rows = metrics(runs / "e")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # nothing lost, nothing repeated
    result = json.loads((runs / "e" / "results.json").read_text())
    assert result["distributed"]["world_size"] == 1  # how it finished


def test_a_rank_that_raises_ends_every_node_with_its_error_in_one_line(tmp_path):
    table, runs = write_table(tmp_path / "t.csv"), tmp_path / "runs"
    missing = tmp_path / "not-on-node-2.csv"  # the data is missing on the second machine
    good = train_flags(table, runs, "f")
    bad = [a if a != f"csv:{table}" else f"csv:{missing}" for a in good]
    began = time.monotonic()
    procs = two_nodes(good, bad)
    outs = finish(*procs)
    assert time.monotonic() - began < 60 + 20, "the job outlived the failed rank by over 60 s"
    assert all(p.returncode not in (0, None) for p in procs)
    lines = [line for out in outs for line in out.splitlines() if str(missing) in line]
    assert len(lines) == 1 and lines[0].startswith("error (rank "), "\n".join(outs)[-4000:]
