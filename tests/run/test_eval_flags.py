"""Item 8 of issue 22: ``eval --batch-size -1`` names eval's own flag (it has no
``--eval-batch-size``), before anything is loaded."""

from __future__ import annotations

import pytest

from helpers import cli, one_line_error


@pytest.mark.parametrize("size", ["-1", "0"])
def test_eval_bad_batch_size_names_its_own_flag(tmp_path, capsys, size):
    code, _, err = cli(capsys, "eval", tmp_path / "no-such-run", "--batch-size", size)
    line = one_line_error(err)
    assert code == 2 and f"--batch-size {size}" in line and "--eval-batch-size" not in line
