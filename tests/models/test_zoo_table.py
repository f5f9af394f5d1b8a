"""Issue 25: ``resnetlab models`` builds no model (cold start was 20-36 s). Its rows ship with
the package (models/zoo_table.json); here they are checked against every registered model,
built on the meta device, so the table cannot go stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import resnetlab
from helpers import cli
from resnetlab.models import registry, summary

SHIPPED = {row["name"]: row for row in json.loads(summary.ZOO_TABLE.read_text())}
REFRESH = 'python -c "from resnetlab.models.summary import write_zoo_table; write_zoo_table()"'


def test_shipped_table_names_every_registered_model_in_order():
    assert list(SHIPPED) == resnetlab.list_models(), f"stale models/zoo_table.json: run {REFRESH}"


@pytest.mark.parametrize("name", resnetlab.list_models())
def test_shipped_row_is_the_built_model(name):
    assert SHIPPED.get(name) == summary.model_summary(name), \
        f"models/zoo_table.json is stale for {name}: run {REFRESH}"


def test_models_builds_no_model(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a cold user cache
    def refuse(name, *args, **kwargs):
        pytest.fail(f"resnetlab models built {name}")

    monkeypatch.setattr(registry, "create_model", refuse)
    monkeypatch.setattr(summary, "model_summary", refuse)
    monkeypatch.setattr(resnetlab, "create_model", refuse, raising=False)
    code, out, err = cli(capsys, "models", "--json")
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)] == list(SHIPPED)
    code, out, _ = cli(capsys, "models", "resnet2*")
    assert code == 0 and "0.27M" in out and "40.6M" in out


def test_models_does_not_import_torch(tmp_path):
    # what makes a cold listing fast: no torch import (about 2 s), no model built
    code = ("import sys\nfrom resnetlab.cli.app import main\ntry:\n    main(['models', 'resnet20'])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}  # a cold user cache
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
