"""Data-parallel training on torchrun (CPU, gloo, two local ranks), with faults.

The model is a small MLP-ResNet *with* BatchNorm trained with ``--sync-bn`` (resnetlab's CPU
SyncBatchNorm), so two ranks with batch B must match one process with batch 2B exactly (up to
float rounding): same samples per step, same gradients, same BN statistics.  Every subprocess
has a timeout; a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import safetensors.torch
import torch

from helpers import cli, write_table
from resnetlab.checkpoint import read_meta, resolve_checkpoint_dir
from resnetlab.data.loaders import BatchLoader, TensorSource
from resnetlab.engine import distributed
from resnetlab.engine.session import epoch_batches
from resnetlab.utils.errors import ConfigError

TIMEOUT_S = 150  # per subprocess: the 2-core CI machine is shared by the whole suite



def flags(table: Path, runs: Path, name: str, batch: int, *extra: str) -> list[str]:
    # 128 rows - 32 validation = 96 training rows: 6 steps per epoch at the global batch 16
    return ["--data", f"csv:{table}", "--target", "label", "--model", "mlp_resnet",
            "--width-mult", "0.0625", "--set", "num_blocks=1", "--drop-rate", "0",
            "--val-size", "32", "--batch-size", str(batch), "--epochs", "2", "--sync-bn",
            "--device", "cpu", "--precision", "fp32", "--deterministic", "--no-progress",
            "--no-tta", "--seed", "3", "--log-every", "1", "--runs-dir", str(runs),
            "--name", name, *extra]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "RESNETLAB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "RESNETLAB_DIST_TIMEOUT": "60", **extra}


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node=2", "-m", "resnetlab", "train", *args]


def run_ok(cmd: list[str], **extra_env: str) -> str:
    done = subprocess.run(cmd, env=env(**extra_env), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(run_dir / "checkpoints" / "last" / "model.safetensors")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def progress(run_dir: Path) -> dict:
    return read_meta(resolve_checkpoint_dir(run_dir / "checkpoints" / "last"))


# -- fast checks, one process -------------------------------------------------------------


def test_map_batch_never_skips_a_batch():
    assert distributed.map_batch(5, 2, 1) == 10       # 10 loader batches trained
    assert distributed.map_batch(7, 1, 2) == 3        # batch 6 is trained again
    assert distributed.map_batch(3, 2, 4) == 1
    for batch in range(20):
        for saved, world in ((1, 2), (2, 1), (2, 3), (3, 2)):
            new = distributed.map_batch(batch, saved, world)
            assert batch * saved - world < new * world <= batch * saved


def test_ranks_read_disjoint_batches_covering_the_epoch():
    loader = BatchLoader(TensorSource(torch.arange(40), torch.arange(40)), batch_size=4,
                         train=True, seed=1)
    whole = [x for x, _ in epoch_batches(loader, 3)]
    shards = [[x for x, _ in epoch_batches(loader, 3, 0, 5, rank, 2)] for rank in (0, 1)]
    assert [len(s) for s in shards] == [5, 5]
    assert torch.equal(torch.cat([torch.cat(s) for s in shards]).sort().values, torch.arange(40))
    assert all(torch.equal(shards[r][k], whole[2 * k + r]) for r in (0, 1) for k in range(5))
    # resuming rank 1 at its batch 2 reads loader batch 5 first
    assert torch.equal(next(epoch_batches(loader, 3, 2, 5, 1, 2))[0], whole[5])


def test_dist_timeout_from_environment(monkeypatch):
    monkeypatch.setenv("RESNETLAB_DIST_TIMEOUT", "12.5")
    assert distributed.dist_timeout() == 12.5
    monkeypatch.setenv("RESNETLAB_DIST_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="RESNETLAB_DIST_TIMEOUT"):
        distributed.dist_timeout()


def test_sync_bn_is_plain_bn_in_one_process():
    bn = torch.nn.BatchNorm1d(3)
    ref = torch.nn.BatchNorm1d(3)
    distributed.convert_sync_bn(bn, torch.device("cpu"))  # not distributed: unchanged
    assert type(bn) is torch.nn.BatchNorm1d
    bn.__class__ = distributed.CpuSyncBatchNorm
    x = torch.randn(8, 3)
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)


def test_nproc_flag_errors_are_one_line(tmp_path, capsys, monkeypatch):
    code, _, err = cli(capsys, "train", "--nproc", "0", "--runs-dir", tmp_path)
    assert code == 2 and "--nproc 0" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = cli(capsys, "train", "--nproc", "2", "--runs-dir", tmp_path)
    assert code == 2 and "drop --nproc" in err


# -- two ranks ------------------------------------------------------------------------------


def _nan_on_rank_one(rank: int, init_file: str, out_dir: str) -> None:
    """Rank 1's loss is NaN, rank 0's is finite: the guard must skip the step on both."""
    import torch.distributed as dist

    from resnetlab.engine.guard import NonFiniteGuard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        guard = NonFiniteGuard(model, opt, scaler, 5, lambda step: 0.1)
        before = model.weight.detach().clone()
        loss = model(torch.ones(4, 2)).sum() * (float("nan") if rank == 1 else 1.0)
        loss.backward()
        guard.step(loss)
        torch.save({"changed": not torch.equal(before, model.weight)}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_a_nan_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    torch.multiprocessing.spawn(_nan_on_rank_one, args=(str(tmp_path / "init"), str(tmp_path)),
                                nprocs=2, join=True)
    changed = [torch.load(tmp_path / f"{r}.pt", weights_only=True)["changed"] for r in (0, 1)]
    assert changed == [False, False]  # rank 0's finite loss alone would have stepped



@pytest.mark.slow
def test_two_ranks_match_one_process_with_twice_the_batch(tmp_path, capsys):
    table, runs = write_table(tmp_path / "t.csv"), tmp_path / "runs"
    code, _, err = cli(capsys, "train", *flags(table, runs, "one", 16))
    assert code == 0, err
    run_ok(torchrun(*flags(table, runs, "two", 8)))  # the plain torchrun command line
    one, two = runs / "one", runs / "two"
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]  # one directory per run
    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys() and any("norm" in k for k in w1)
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], atol=1e-5, rtol=0, msg=key)
    rows1, rows2 = metrics(one), metrics(two)
    assert [r["epoch"] for r in rows2] == [1, 2] and [r["step"] for r in rows2] == [6, 12]
    for r1, r2 in zip(rows1, rows2, strict=True):  # train and validation metrics over all ranks
        for key in ("train_loss", "train_top1", "val_loss", "val_top1"):
            assert r2[key] == pytest.approx(r1[key], abs=1e-5), key
    assert json.loads((two / "results.json").read_text())["steps"] == 12


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, deadline: float) -> None:
    while True:
        rows = (run_dir / "steps.csv").read_text().splitlines()[1:] if (run_dir / "steps.csv").exists() else []
        if rows and rows[-1].split(",")[0].isdigit() and int(rows[-1].split(",")[0]) >= step:
            return
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)


def kill_rank(tag: str, rank: int) -> None:
    """SIGKILL the worker process of ``rank`` among those started with ``H14_TAG=tag``."""
    want = {f"H14_TAG={tag}".encode(), f"RANK={rank}".encode()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            entries = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if want <= entries and b"LOCAL_RANK=" + str(rank).encode() in entries:
            os.kill(int(pid), signal.SIGKILL)
            return
    pytest.fail(f"no process of rank {rank} found")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds ranks through /proc")
def test_a_dead_rank_ends_the_job_promptly_and_a_restart_resumes(tmp_path):
    table, runs = write_table(tmp_path / "t.csv", rows=256), tmp_path / "runs"
    tag = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "resnetlab", "train", *flags(table, runs, "r", 8),
           "--epochs", "4", "--checkpoint-every", "4", "--nproc", "2"]
    # 1) no restarts: rank 1 dies, the job exits non-zero well inside the timeout
    proc = subprocess.Popen(cmd, env=env(H14_TAG=tag), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for_step(runs / "r", 9, proc, time.monotonic() + TIMEOUT_S)
    kill_rank(tag, 1)
    killed = time.monotonic()
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode not in (0, None)
    assert time.monotonic() - killed < 60, "the job hung after a rank died"
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9", out), out[-3000:]
    assert "resume with: resnetlab train --resume" in out
    assert progress(runs / "r")["step"] >= 8  # the checkpoint at step 8 or later is complete
    # 2) a new run with --max-restarts 1: rank 1 dies, torchrun restarts the job and it resumes
    #    from the last complete checkpoint by itself, ending with one metrics row per epoch
    tag = uuid.uuid4().hex
    cmd[cmd.index("--name") + 1] = "s"
    proc = subprocess.Popen([*cmd, "--max-restarts", "1"], env=env(H14_TAG=tag),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_step(runs / "s", 9, proc, time.monotonic() + TIMEOUT_S)
    kill_rank(tag, 1)
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, out[-4000:]
    assert "torchrun restart 1: resuming" in out
    rows = metrics(runs / "s")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    # 224 training rows = 28 batches of 8 = 14 steps per epoch on each of the 2 ranks
    assert rows[-1]["step"] == 4 * 14


@pytest.mark.slow
def test_checkpoints_resume_across_world_sizes(tmp_path, capsys):
    table, runs = write_table(tmp_path / "t.csv"), tmp_path / "runs"
    base = [sys.executable, "-m", "resnetlab", "train"]
    # 2 ranks stop at their step 4 (loader batches 0..7 trained), 1 process continues at batch 8
    run_ok([*base, *flags(table, runs, "a", 8, "--max-steps", "4", "--nproc", "2")])
    (runs / "a" / "results.json").unlink()  # make the finished run resumable again
    code, _, err = cli(capsys, "train", "--resume", runs / "a", "--max-steps", "10", "--no-progress")
    assert code == 0, err
    assert "resuming a 2-process checkpoint on 1: epoch 1 continues at batch 8 of 12" in err
    assert progress(runs / "a")["step"] == 10 and (runs / "a" / "results.json").is_file()
    # the reverse: 1 process stops at batch 5; 2 ranks continue at loader batch 4 (their 2)
    code, _, err = cli(capsys, "train", *flags(table, runs, "b", 8, "--max-steps", "5"))
    assert code == 0, err
    (runs / "b" / "results.json").unlink()
    out = run_ok([*base, "--resume", str(runs / "b"), "--max-steps", "8", "--nproc", "2",
                  "--no-progress"])
    assert "resuming a 1-process checkpoint on 2: epoch 1 continues at batch 2 of 6" in out
    meta = progress(runs / "b")
    assert meta["step"] == 8 and meta["epoch"] == pytest.approx(1 + 2 / 6, abs=1e-4)
    assert [r["epoch"] for r in metrics(runs / "b")][-2:] == [1, pytest.approx(1 + 2 / 6, abs=1e-4)]
