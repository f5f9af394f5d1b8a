"""utils.notices: the one channel for messages to the user (stderr, quiet, JSON lines)."""

from __future__ import annotations

import json
import logging

import pytest

from resnetlab.utils.notices import configure, say


@pytest.fixture(autouse=True)
def _default_channel():
    yield
    configure()  # the next test gets plain lines at INFO again


def test_say_writes_one_line_to_the_current_stderr(capsys):
    say("resuming runs/x at step 4")
    assert capsys.readouterr().err == "resuming runs/x at step 4\n"


def test_quiet_keeps_warnings_and_json_lines_are_parseable(capsys):
    configure(quiet=True)
    say("an info notice")
    say("a warning", level=logging.WARNING)
    assert capsys.readouterr().err == "a warning\n"
    configure(json_lines=True)
    say("hello")
    assert json.loads(capsys.readouterr().err) == {"level": "info", "message": "hello"}


def test_the_cli_quiet_flag_silences_notices(capsys, tmp_path):
    from helpers import cli

    code, _, err = cli(capsys, "--quiet", "train", "--resume", tmp_path, "--config", "default")
    assert code == 2 and err.startswith("error: --config default with --resume")
