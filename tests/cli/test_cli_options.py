"""Run options are declared once (engine.config) and every command's flags, the --set keys,
the errors and the docs table are generated from the declarations (issue 19, item 1)."""

from __future__ import annotations

import re

import pytest

from helpers import cli, one_line_error
from resnetlab.engine.config import OPTIONS, default_recipe, effective_default, options_markdown


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")  # long flag pairs are not cut short in --help


def _help(capsys, *argv) -> str:
    code, out, _ = cli(capsys, *argv, "--help")
    assert code == 0
    return re.sub(r"[\s│]+", " ", out)  # rich wraps help text over boxed lines


def test_train_help_shows_every_flag_with_the_recipes_effective_default(capsys):
    text = _help(capsys, "train")
    recipe = default_recipe()
    for option in OPTIONS.values():
        if option.flag and option.only is None:
            assert option.flag in text, option.flag
    # values the default recipe sets differently from the dataclass defaults
    assert recipe.train.epochs == 6 and "Training epochs. [default: 6]" in text
    assert "Evaluation batch size. [default: 256]" in text
    assert "Label smoothing. [default: 0.1]" in text
    assert f"[default: {effective_default(OPTIONS['schedule.warmup_frac'], recipe)}]" in text


def test_finetune_and_compare_take_the_train_flags(capsys):
    finetune, compare = _help(capsys, "finetune"), _help(capsys, "compare")
    for flag in ("--lr", "--label-smoothing", "--freeze", "--backbone-lr-scale", "--ema"):
        assert flag in finetune, flag
    for flag in ("--lr", "--width-mult", "--depths", "--seeds", "--nproc"):
        assert flag in compare, flag
    assert "--freeze" not in compare and not re.search(r"--train-size\b(?!s)", compare)


@pytest.mark.parametrize("argv, message", [
    (["--width-mult", "nan"], "--width-mult nan: must be a finite number > 0"),
    (["--set", "name=x"], "--set name=x: name is not a model argument; use --name x"),
    (["--set", "optim=x"], "--set optim=x: optim is not a model argument"),
    (["--warmup-frac", "1"], "--warmup-frac 1: must be a fraction of all steps in [0, 1)"),
    (["--optimizer", "lamb"], "--optimizer 'lamb': choose one of sgd, adamw"),
    (["--milestones", "3,2", "--schedule", "step"], "schedule.milestones must be increasing"),
])
def test_bad_values_are_one_line_errors_before_any_work(capsys, tmp_path, argv, message):
    code, _, err = cli(capsys, "train", *argv, "--runs-dir", tmp_path, "--max-steps", "1")
    assert code == 2 and message in one_line_error(err)
    assert not any(tmp_path.iterdir())


def test_options_markdown_lists_every_key_once():
    table = options_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(OPTIONS)
    assert "| `--lr` | `optim.lr` | `0.2` | Peak learning rate. (must be a finite number > 0) |" in table
    assert "`--set data.split_seed=...`" in table
