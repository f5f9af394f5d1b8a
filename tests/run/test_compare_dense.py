"""The dense-block sweep of issue 11: ``resnetlab compare --blocks`` trains ``mlp_resnet`` and
its plain twin ``plain_mlp`` at each block count on a table, through the same compare machinery
(table, figure, findings) as the image nets."""

from __future__ import annotations

import json

import numpy as np

from helpers import cli, one_line_error


def _table(path, n=120, seed=0):
    """Two classes separated by x1 + x2 > 0, four numeric columns."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    lines = ["a,b,c,d,label"] + [",".join(f"{v:.4f}" for v in row) + f",{int(row[0] + row[1] > 0)}"
                                 for row in x]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dense_block_sweep_runs_mlp_resnet_and_its_plain_twin(tmp_path, capsys):
    data = _table(tmp_path / "t.csv")
    code, out, err = cli(capsys, "compare", "--blocks", "1,3", "--data", f"csv:{data}",
                         "--target", "label", "--epochs", "1", "--set", "width=16",
                         "--set", "bottleneck_width=8", "--device", "cpu", "--no-progress",
                         "--runs-dir", tmp_path / "runs", "--name", "sweep")
    assert code == 0, err
    result = json.loads((tmp_path / "runs" / "sweep" / "comparison.json").read_text())
    got = {(m["family"], m["depth"]) for m in result["members"]}
    assert got == {("plain", 1), ("resnet", 1), ("plain", 3), ("resnet", 3)}
    for family, model in (("plain", "plain_mlp"), ("resnet", "mlp_resnet")):
        cfg = (tmp_path / "runs" / "sweep" / "runs" / f"{family}3-s0" / "config.yaml").read_text()
        assert f"name: {model}" in cfg and "num_blocks: 3" in cfg
    assert (tmp_path / "runs" / "sweep" / "degradation.png").stat().st_size > 0
    assert "plain-3" in out  # the findings name the pairs


def test_blocks_and_depths_together_is_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, "compare", "--blocks", "2", "--depths", "20", "--data",
                       f"csv:{_table(tmp_path / 't.csv')}", "--target", "label")
    assert code == 2 and "--depths and --blocks" in one_line_error(err)
