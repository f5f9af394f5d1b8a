"""Issue 22, item 1: a torchrun restart never deletes a folder resnetlab did not make.

Reproduction from the audit: ``TORCHELASTIC_RESTART_COUNT=1 resnetlab train --runs-dir D --name
keep`` on a user's folder ``D/keep`` deleted its files.  A restart may only clean a run
directory carrying resnetlab's marker with the same torchrun job id.
"""

from __future__ import annotations

import json

from helpers import cli, one_line_error
from resnetlab.engine.rundir import RUN_MARKER, made_by_job, new_run_dir

SMALL = ["--max-steps", "1", "--train-size", "100", "--val-size", "50", "--epochs", "1",
         "--no-tta", "--precision", "fp32"]


def test_restart_keeps_a_users_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "p.txt").write_text("precious")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    code, _, err = cli(capsys, "train", "--runs-dir", tmp_path, "--name", "keep", *SMALL)
    assert code == 2 and "already exists" in one_line_error(err)
    assert (tmp_path / "keep" / "p.txt").read_text() == "precious"


def test_restart_keeps_another_jobs_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    made = new_run_dir(tmp_path, "r")
    assert made_by_job(made)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-2")
    assert not made_by_job(made)  # a later job with the same --name must not clean it
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    assert not made_by_job(made)  # outside torchrun nothing is ever cleaned


def test_restart_cleans_the_run_its_own_job_made(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    made = new_run_dir(tmp_path, "mine")  # the failed first attempt's directory, no checkpoint
    marker = json.loads((made / RUN_MARKER).read_text())
    assert marker["created_by"] == "resnetlab" and marker["job"] == "job-7"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    code, out, err = cli(capsys, "train", "--runs-dir", tmp_path, "--name", "mine", *SMALL)
    assert code == 0, err
    assert (made / "results.json").is_file()


def test_every_new_run_directory_carries_the_marker(tmp_path):
    assert (new_run_dir(tmp_path) / RUN_MARKER).is_file()
    assert (new_run_dir(tmp_path, "named") / RUN_MARKER).is_file()
