"""``resnetlab models``: a table for people, JSON for scripts, one-line errors."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

import resnetlab
from resnetlab.cli.app import main
from resnetlab.models import count_parameters


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module", autouse=True)
def _table_cache(tmp_path_factory):
    """A fresh user cache for this module: the first listing counts, later ones read it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def all_rows():
    """``resnetlab models --json`` over the whole zoo, run once for this module."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.raises(SystemExit) as exit_:
        main(["models", "--json"])
    assert exit_.value.code in (0, None)
    return {row["name"]: row for row in json.loads(buffer.getvalue())}


def test_json_lists_every_registered_model(all_rows):
    assert sorted(all_rows) == sorted(resnetlab.list_models())
    for row in all_rows.values():
        assert set(row) >= {"name", "params", "macs", "depth", "block", "shortcut", "input_size"}
        assert row["params"] > 0 and row["macs"] > 0 and row["depth"] > 0


def test_json_numbers_are_the_models(all_rows):
    with torch.device("meta"):
        assert all_rows["resnet56"]["params"] == count_parameters(resnetlab.create_model("resnet56"))
    assert all_rows["resnet50"]["params"] == 25_557_032
    # MACs at 224x224: He et al. 2015, table 1 has 3.6G for ResNet-34; torchvision lists 4.09G
    # for its (v1.5) ResNet-50.
    assert all_rows["resnet34"]["macs"] / 1e9 == pytest.approx(3.6, abs=0.1)
    assert all_rows["resnet50"]["macs"] / 1e9 == pytest.approx(4.09, abs=0.01)
    # CIFAR ResNet-20 at 32x32: 40.6M MACs (one 16->16 3x3 conv at 32x32 alone is 2.4M).
    assert all_rows["resnet20"]["macs"] / 1e6 == pytest.approx(40.6, abs=0.5)
    assert [all_rows[n]["depth"] for n in ("resnet20", "resnet50", "plain110", "resnet50d")] == \
        [20, 50, 110, 52]
    assert all_rows["plain20"]["shortcut"] == "none" and all_rows["resnet20"]["shortcut"] == "A"
    assert all_rows["wrn28_10"]["block"] == "preact_basic"
    assert all_rows["mlp_resnet"]["input_size"] == [784]


def test_table_for_people(capsys):
    code, out, _ = _run(capsys, "models", "resnet2*")
    assert code == 0
    for column in ("name", "params", "MACs", "depth", "block", "shortcut"):
        assert column in out
    assert "resnet20" in out and "0.27M" in out and "40.6M" in out
    assert "resnet50" not in out


def test_family_filter(capsys):
    code, out, _ = _run(capsys, "models", "--family", "wide", "--json")
    assert code == 0
    assert [r["name"] for r in json.loads(out)] == resnetlab.list_models("*wrn*")


@pytest.mark.parametrize("family, expected", [
    ("cifar", [n for n in resnetlab.list_models() if resnetlab.model_info(n)["family"] == "cifar"]),
    ("preact", resnetlab.list_models("preact_resnet*")),
    ("resnet-d", ["resnet18d", "resnet34d", "resnet50d", "resnet101d"]),
    ("imagenet", [n for n in resnetlab.list_models()
                  if resnetlab.model_info(n)["input_size"] == (3, 224, 224)]),
    ("mlp", ["mlp_resnet", "plain_mlp"]),
])
def test_family_accepts_the_readme_groups(capsys, all_rows, family, expected):
    code, out, _ = _run(capsys, "models", "--family", family, "--json")
    assert code == 0
    assert [r["name"] for r in json.loads(out)] == expected


def test_wide_resnet_depth_is_the_papers_6n_plus_4(all_rows):
    # Zagoruyko & Komodakis count the two downsampling projections: WRN-16-8 has n = 2
    assert [all_rows[n]["depth"] for n in ("wrn16_8", "wrn28_10", "wrn40_4", "plain_wrn16_8")] \
        == [16, 28, 40, 16]


def test_a_second_listing_reads_the_cache_and_builds_nothing(capsys, all_rows, monkeypatch):
    from resnetlab.cli import models as cli_models
    from resnetlab.models import summary

    assert cli_models.table_cache_path().is_file()  # written by the first listing
    monkeypatch.setattr(summary, "model_summary", lambda name: pytest.fail(f"built {name}"))
    code, out, _ = _run(capsys, "models", "--json")
    assert code == 0 and {r["name"]: r for r in json.loads(out)} == all_rows


def test_a_corrupt_cache_is_recounted(capsys, all_rows, monkeypatch):
    from resnetlab.cli import models as cli_models

    path = cli_models.table_cache_path()
    path.write_text("{not json")
    code, out, _ = _run(capsys, "models", "resnet20", "--json")
    assert code == 0 and json.loads(out)[0]["params"] == all_rows["resnet20"]["params"]
    assert json.loads(path.read_text())[0]["name"] == "mlp_resnet"  # rewritten whole


@pytest.mark.parametrize("argv, message", [
    (("models", "resnet9000"), "no model matches 'resnet9000'"),
    (("models", "--family", "vit"), "--family 'vit'"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
