"""``resnetlab sweep``: Optuna studies whose trials are ordinary run directories.

Tiny trials (a one-block MLP-ResNet on a 128-row table, two or three epochs) keep each trial
to seconds; subprocesses have timeouts so a hang fails instead of stalling the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from helpers import cli, one_line_error, write_table

TIMEOUT_S = 300



def space(tmp: Path, text: str = "optim.lr: loguniform 0.001 0.5\n"
                                  "train.label_smoothing: uniform 0 0.2\n") -> Path:
    path = tmp / "space.yaml"
    path.write_text(text)
    return path


def fixed(table: Path, runs: Path, *extra: str) -> list[str]:
    return ["--data", f"csv:{table}", "--target", "label", "--model", "mlp_resnet",
            "--width-mult", "0.0625", "--set", "num_blocks=1", "--val-size", "32",
            "--batch-size", "16", "--epochs", "2", "--device", "cpu",
            "--runs-dir", str(runs), *extra]


def trials(runs: Path, name: str = "space") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name,
                             storage=f"sqlite:///{runs}/sweeps/{name}.db").get_trials()


def env() -> dict[str, str]:
    return {**os.environ, "RESNETLAB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_a_sweep_prunes_and_writes_best_config_table_and_report(tmp_path, capsys):
    table, runs = write_table(tmp_path / "t.csv"), tmp_path / "runs"
    code, out, err = cli(capsys, "sweep", space(tmp_path), "--trials", "4", "--sampler-seed", "0",
                         *fixed(table, runs, "--epochs", "3"))
    assert code == 0, err
    done = trials(runs)
    states = [t.state.name for t in done]
    assert len(done) == 4 and "PRUNED" in states and "COMPLETE" in states, (states, err)
    assert "pruned at epoch" in err
    for t in done:  # every trial is an ordinary run directory, linked from the study
        run_dir = Path(t.user_attrs["run_dir"])
        assert (run_dir / "config.yaml").is_file() and (run_dir / "results.json").is_file()
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["optim"]["lr"] == pytest.approx(t.params["optim.lr"])
    best = runs / "sweeps" / "space-best.yaml"
    assert f"best config: {best}" in out and "sweep space (val_top1)" in out
    cfg = yaml.safe_load(best.read_text())
    assert cfg["name"] is None and cfg["data"]["name"] == f"csv:{table}"
    html = (runs / "sweeps" / "space.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "optimisation history" in html
    code, _, err = cli(capsys, "train", "--config", best, "--max-steps", "1")  # a ready --config
    assert code == 0, err


def test_two_workers_on_one_sqlite_file_finish_n_trials(tmp_path):
    table, runs = write_table(tmp_path / "t.csv"), tmp_path / "runs"
    cmd = [sys.executable, "-m", "resnetlab", "sweep", str(space(tmp_path)), "--trials", "4",
           "--pruner", "none", *fixed(table, runs)]
    procs = [subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    done = trials(runs)
    numbers = [t.number for t in done]
    assert sorted(numbers) == list(range(len(numbers)))  # no duplicate, no gap
    assert [t.state.name for t in done].count("COMPLETE") >= 4 and len(done) <= 5  # a race adds 1
    assert all(t.state.name == "COMPLETE" for t in done)  # none lost, none left running
    assert len({t.user_attrs["run_dir"] for t in done}) == len(done)
    assert all("trial " in o and "complete" in o for o in outs)  # both workers trained


def test_a_killed_sweep_resumes_and_completes_n_trials(tmp_path):
    table, runs = write_table(tmp_path / "t.csv", rows=256), tmp_path / "runs"
    cmd = [sys.executable, "-m", "resnetlab", "sweep", str(space(tmp_path)), "--trials", "3",
           "--pruner", "none", "--heartbeat", "1",
           *fixed(table, runs, "--epochs", "3", "--batch-size", "8", "--checkpoint-every", "4")]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    second = runs / "sweeps" / "space" / "trial-0001" / "checkpoints" / "last"
    deadline = time.monotonic() + TIMEOUT_S
    while not second.exists():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # trial 1 is cut off mid-run
    proc.wait(timeout=30)
    assert [t.state.name for t in trials(runs)] == ["COMPLETE", "RUNNING"]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [t.state.name for t in trials(runs)]
    assert states.count("COMPLETE") == 3 and states[1] == "FAIL", states  # never counted done
    retry = next(t for t in trials(runs) if t.system_attrs.get("failed_trial") == 1)
    assert retry.state.name == "COMPLETE" and retry.params == trials(runs)[1].params
    assert "retries trial 1 (cut off): continuing" in done.stderr  # from its checkpoint


@pytest.mark.parametrize("text, expect", [
    ("optim.lr: [", "not a readable YAML file"),
    ("optim.lr: lognormal 1 2\n", "optim.lr: 'lognormal 1 2' is not a range"),
    ("optim.lr: loguniform 0 1\n", "need LOW < HIGH (and LOW > 0 on a log scale)"),
    ("optim.lrr: loguniform 0.01 1\n", "unknown key optim.lrr (did you mean lr?)"),
    ("train.epochs: [two, three]\n", "train.epochs must be int"),
])
def test_a_bad_space_file_is_one_line_naming_file_and_key(tmp_path, capsys, text, expect):
    path = space(tmp_path, text)
    code, _, err = cli(capsys, "sweep", path, "--trials", "1", "--runs-dir", tmp_path)
    line = one_line_error(err)
    assert code == 2 and str(path) in line and expect in line, line


def test_storage_and_study_errors_are_one_line(tmp_path, capsys):
    table, runs = write_table(tmp_path / "t.csv"), tmp_path / "runs"
    bad = f"sqlite:///{tmp_path}/no/such/dir/s.db"
    code, _, err = cli(capsys, "sweep", space(tmp_path), "--trials", "1", "--storage", bad,
                       *fixed(table, runs))
    assert code == 2 and f"--storage {bad}: cannot open" in one_line_error(err)
    code, _, err = cli(capsys, "sweep", space(tmp_path), "--trials", "1", "--max-steps", "1",
                       *fixed(table, runs))
    assert code == 0, err
    other = space(tmp_path, "optim.lr: [0.1, 0.2]\n")  # same file name: same study name
    code, _, err = cli(capsys, "sweep", other, "--trials", "1", *fixed(table, runs))
    line = one_line_error(err)
    assert code == 2 and "--study space: taken" in line and "optim.lr: loguniform 0.001 0.5" in line
    code, _, err = cli(capsys, "sweep", other, "--trials", "1", "--pruner", "best", *fixed(table, runs))
    assert code == 2 and "--pruner best" in one_line_error(err)


def test_failing_trials_are_failed_and_three_in_a_row_stop_the_sweep(tmp_path, capsys):
    table, runs = write_table(tmp_path / "t.csv"), tmp_path / "runs"
    # no validation rows: val_top1, the metric, cannot be measured, so every trial fails
    code, _, err = cli(capsys, "sweep", space(tmp_path, "data.val_size: [0]\n"), "--trials", "5",
                       *fixed(table, runs, "--max-steps", "1"))
    assert code == 2 and "error: 3 trials in a row failed; the last: " in err
    assert err.count("failed: ") == 3
    assert [t.state.name for t in trials(runs)] == ["FAIL"] * 3


@pytest.mark.parametrize("race", [
    "(sqlite3.OperationalError) table alembic_version already exists",
    "(sqlite3.IntegrityError) UNIQUE constraint failed: version_info.version_info_id",
])
def test_two_workers_creating_one_new_database_both_open_it(monkeypatch, race):
    """Two processes (machines) started together on a new SQLite file race to create Optuna's
    schema; the loser's error is retried, not reported (it failed CI once: 'already exists')."""
    from resnetlab.run import sweep

    tries = []

    def racing(url, heartbeat_s):
        tries.append(url)
        if len(tries) == 1:
            raise RuntimeError(race)
        return "storage"

    monkeypatch.setattr(sweep, "_open_storage", racing)
    monkeypatch.setattr(sweep.time, "sleep", lambda s: None)
    assert sweep._storage("sqlite:///x.db", 5.0) == "storage" and len(tries) == 2


def test_a_storage_that_cannot_open_is_not_retried(monkeypatch):
    from resnetlab.run import sweep
    from resnetlab.utils.errors import ConfigError

    tries = []

    def unreachable(url, heartbeat_s):
        tries.append(url)
        raise RuntimeError("no such host")

    monkeypatch.setattr(sweep, "_open_storage", unreachable)
    with pytest.raises(ConfigError, match="cannot open the study storage \\(no such host\\)"):
        sweep._storage("postgresql://nowhere/db", 5.0)
    assert len(tries) == 1
