"""``resnetlab compare`` (issue 10): the degradation experiment on a tiny budget.

A tiny comparison writes every artefact (table, figures, markdown, HTML, findings computed from
the numbers); member runs are ordinary run directories; a comparison killed with SIGKILL between
members or inside a member continues without retraining what finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cli, needs_chromium, one_line_error, render_in_chromium, write_folder
from resnetlab import run
from resnetlab.checkpoint import read_meta, resolve_checkpoint_dir
from resnetlab.run.compare_results import degradation_findings, size_findings
from resnetlab.utils.errors import UserError

TINY = ["--width-mult", "0.125", "--batch-size", "8", "--val-size", "8", "--device", "cpu",
        "--precision", "fp32", "--no-progress", "--no-download", "--lr", "0.05", "--train-sizes", "40"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "animals", per_class=16)


def tiny_base(folder: Path, runs: Path, epochs: int = 1) -> run.RunConfig:
    cfg = run.config_with("compare-quick", {
        "data.name": f"folder:{folder}", "data.batch_size": 8, "data.val_size": 8,
        "data.train_size": None, "model.kwargs.width_mult": 0.125, "train.epochs": epochs,
        "train.device": "cpu", "optim.lr": 0.05})
    cfg.runs_dir = str(runs)
    return cfg


@pytest.fixture(scope="module")
def tiny(folder, tmp_path_factory):
    """One tiny comparison (2 depths x 2 families x 2 data sizes, 1 epoch) shared by the tests."""
    runs = tmp_path_factory.mktemp("runs")
    return run.compare(tiny_base(folder, runs), [20, 32], train_sizes=[16, 40], name="c",
                       progress=False), runs


def test_tiny_comparison_writes_every_artefact(tiny, tmp_path, capsys):
    result, runs = tiny
    out = runs / "c"
    assert result.out_dir == out and len(result.members) == 8
    for name in ("table.csv", "report.md", "report.html", "comparison.json", "compare.yaml",
                 "degradation-n16.png", "degradation-n40.png", "train_sizes.png"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "table.csv").read_text().splitlines()
    assert table[0].startswith("train images,depth,family,params,final train error")
    assert len(table) == 1 + 8  # 2 sizes x 2 depths x 2 families
    info = json.loads((out / "comparison.json").read_text())
    plain = [m for m in info["members"] if m["family"] == "plain" and m["train_size"] == 40]
    words = {m["depth"]: f"{100 * m['final_train_err']:.2f}%" for m in plain}
    sentence = next(f for f in result.findings if f.startswith("plain-32 ends") and " 40 " in f)
    assert words[32] in sentence and words[20] in sentence  # the numbers, not a canned text
    assert any("over-fitting gap" in f for f in result.findings)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "plain-32" in html
    # the params column: residual and plain twins have identical parameters (option A)
    rows = {(r["depth"], r["family"]): r["params"] for r in result.rows if r["train images"] == "40"}
    assert rows[20, "plain"] == rows[20, "resnet"] != rows[32, "plain"]
    # members are ordinary run directories
    code, text, err = cli(capsys, "eval", out / "runs" / "resnet20-s0-n40", "--split", "val", "--json")
    assert code == 0, err
    assert json.loads(text)["num_samples"] > 0
    assert cli(capsys, "report", out, "--out", tmp_path / "again.html")[0] == 0
    assert (tmp_path / "again.html").stat().st_size > 0


def _rec(family, depth, seed, train_err, val_err=0.5, size=None):
    return {"family": family, "depth": depth, "seed": seed, "train_size": size,
            "final_train_err": train_err, "best_val_err": val_err, "final_val_err": val_err}


def test_findings_follow_the_numbers():
    degraded = [_rec("plain", 20, s, 0.029) for s in (0, 1, 2)] + \
               [_rec("plain", 56, s, 0.041, 0.6) for s in (0, 1, 2)] + \
               [_rec("resnet", 20, s, 0.03) for s in (0, 1, 2)] + \
               [_rec("resnet", 56, s, 0.02) for s in (0, 1, 2)]
    lines = degradation_findings(degraded)
    assert lines[0] == ("plain-56 ends with a higher training error (4.10%) than plain-20 (2.90%) "
                        "(higher in 3 of 3 seeds): degradation reproduced in every seed, while "
                        "resnet-56 trains better on average than resnet-20 (2.00% vs 3.00%, "
                        "higher in 0 of 3 seeds)")
    assert "not over-fitting" in lines[1]
    assert "resnet-56 ends with a lower training error (2.00%)" in lines[2]
    assert lines[2].endswith("does not degrade with depth")
    one_seed_off = [dict(r) for r in degraded]
    one_seed_off[3]["final_train_err"] = 0.02  # plain-56, seed 0 now trains better
    assert "reproduced on the means, but in only 2 of 3 seeds" in degradation_findings(one_seed_off)[0]
    both_worse = degraded[:6] + [_rec("resnet", 20, s, 0.03) for s in (0, 1, 2)] + \
                 [_rec("resnet", 56, s, 0.05) for s in (0, 1, 2)]
    lines = degradation_findings(both_worse)
    assert "degradation not shown" in lines[0] and "degradation reproduced" not in lines[0]
    assert lines[-1].endswith("also trains worse when deeper at this budget")
    reversed_ = [_rec("plain", 20, 0, 0.05), _rec("plain", 56, 0, 0.04)]
    assert degradation_findings(reversed_) == [
        "plain-56 ends with a lower training error (4.00%) than plain-20 (5.00%): "
        "degradation not reproduced at this budget"]
    gap = size_findings([{"label": "resnet-20", "sizes": [500, 5000], "train_acc": [1.0, 0.95],
                          "val_acc": [0.8, 0.93]}], None)
    assert gap == ["resnet-20: final training accuracy exceeds validation accuracy by 20.0 points "
                   "with 500 training images and by 2.0 with 5,000: the over-fitting gap shrinks "
                   "with more data"]


def test_bad_depth_and_taken_name_are_one_line(folder, tmp_path, capsys):
    code, _, err = cli(capsys, "compare", "--depths", "20,21", "--data", f"folder:{folder}",
                       "--runs-dir", tmp_path, *TINY)
    assert code == 2 and "--depths 21" in one_line_error(err) and "6n+2" in err
    (tmp_path / "taken").mkdir()
    code, _, err = cli(capsys, "compare", "--depths", "20", "--data", f"folder:{folder}",
                       "--runs-dir", tmp_path, "--name", "taken", *TINY)
    assert code == 2 and "--resume" in one_line_error(err)
    code, _, err = cli(capsys, "compare", "--resume", tmp_path / "taken")
    assert code == 2 and "compare.yaml" in one_line_error(err)


# -- interruption: real subprocesses and SIGKILL --------------------------------------------------

def _start(folder: Path, runs: Path, log: Path, epochs: int, jobs: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "resnetlab", "compare", "--depths", "20,32", "--data",
           f"folder:{folder}", "--epochs", str(epochs), "--checkpoint-every", "2",
           "--runs-dir", str(runs), "--name", "c", "--jobs", str(jobs), *TINY]
    env = {**os.environ, "RESNETLAB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)


def _kill_when(proc: subprocess.Popen, ready, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"compare ended (status {proc.returncode}) before the kill:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("compare made no progress")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _checkpoint_step(run_dir: Path) -> int:
    # polled while the trainer swaps checkpoints atomically: a folder can vanish between the
    # lookup and the read, which only means "not yet"
    try:
        last = resolve_checkpoint_dir(run_dir / "checkpoints" / "last")
        return (read_meta(last).get("step") or 0) if last else 0
    except (OSError, UserError):
        return 0


@pytest.mark.parametrize("where", ["between members", "inside a member"])
def test_killed_comparison_continues(folder, tmp_path, capsys, where):
    members = tmp_path / "c" / "runs"
    first, second = members / "plain20-s0-n40", members / "resnet20-s0-n40"
    log = tmp_path / "log.txt"
    proc = _start(folder, tmp_path, log, epochs=3)
    if where == "between members":
        _kill_when(proc, lambda: (first / "results.json").is_file(), log)
    else:
        _kill_when(proc, lambda: _checkpoint_step(second) >= 2, log)
        assert not (second / "results.json").exists()
    kept = (first / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    result = run.resume_comparison(tmp_path / "c", progress=False, jobs=1)
    err = capsys.readouterr().err
    assert (first / "results.json").stat().st_mtime_ns == kept  # not retrained
    assert result.members[0].already_finished
    if where == "inside a member":
        assert f"resuming {second} at step" in err
    assert len(result.members) == 4 and all(m.results for m in result.members)
    assert (tmp_path / "c" / "report.html").is_file() and len(result.rows) == 4
    assert not (tmp_path / "c" / ".lock").exists()


def _spawned_workers(parent: int) -> list[int]:
    """The multiprocessing workers of ``parent`` (read from /proc: no psutil needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:  # a zombie has stopped: only its exit status is left for the reaper
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers follow their parent on Linux")
def test_a_killed_parallel_comparison_leaves_no_member_training(folder, tmp_path):
    members, log, workers = tmp_path / "c" / "runs", tmp_path / "log.txt", []
    proc = _start(folder, tmp_path, log, epochs=3, jobs=2)

    def both_working() -> bool:
        workers[:] = _spawned_workers(proc.pid)
        started = [m for m in members.glob("*") if not (m / "results.json").exists()]
        return len(workers) == 2 and any(_checkpoint_step(m) >= 2 for m in started)

    _kill_when(proc, both_working, log)  # SIGKILL: compare itself cannot pass anything on
    deadline = time.monotonic() + 120
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in workers), "a worker trained on after compare died"
    result = run.resume_comparison(tmp_path / "c", progress=False, jobs=2)
    assert [m.run_dir.name for m in result.members] == [
        "plain20-s0-n40", "resnet20-s0-n40", "plain32-s0-n40", "resnet32-s0-n40"]  # the plan's order
    assert all(m.results for m in result.members) and len(result.rows) == 4


def test_resuming_a_finished_comparison_side_by_side_reads_every_member_back(tiny):
    result, runs = tiny
    again = run.resume_comparison(runs / "c", progress=False, jobs=2)
    assert [m.run_dir for m in again.members] == [m.run_dir for m in result.members]
    assert all(m.already_finished for m in again.members) and again.rows == result.rows


def test_jobs_is_checked_once(folder, tmp_path, capsys):
    code, _, err = cli(capsys, "compare", "--depths", "20", "--data", f"folder:{folder}",
                       "--runs-dir", tmp_path, "--jobs", "0", *TINY)
    assert code == 2 and one_line_error(err).startswith("error: --jobs 0: give at least 1")
    code, _, err = cli(capsys, "compare", "--depths", "20", "--data", f"folder:{folder}",
                       "--runs-dir", tmp_path, "--jobs", "2", "--nproc", "2", *TINY)
    assert code == 2 and "--jobs 2 with --nproc 2: choose one" in one_line_error(err)


@needs_chromium
def test_comparison_report_renders_in_headless_chromium(tiny, tmp_path):
    result, _ = tiny
    widths, text, errors = render_in_chromium(result.files["html"], tmp_path / "profile")
    assert errors == []
    assert len(widths) == 3 and all(w > 0 for w in widths), widths
    assert result.findings[0] in text and result.rows[0]["final train error"] in text
