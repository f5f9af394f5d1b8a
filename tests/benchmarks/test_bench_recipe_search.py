"""benchmarks/recipe_search.py: equal-time variants and a --quick search end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from helpers import needs_fmnist

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "recipe_search.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("recipe_search", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _steps(flags: list[str]) -> int:
    return int(flags[flags.index("--set") + 1].removeprefix("train.steps="))


def test_equal_time_buys_more_steps_with_cheaper_sizes():
    bench = load_bench()
    assert _steps(bench.equal_time((20, 24, 28))) == bench.BASE_STEPS  # the base work itself
    cheaper = _steps(bench.equal_time((16, 20, 24, 28)))
    cheapest = _steps(bench.equal_time((16, 16, 20, 24, 28)))
    assert bench.BASE_STEPS < cheaper < cheapest
    # the same AVX2 seconds: steps x mean cost per step is the base's, within one step
    cost = bench.AVX2_STEP_COST
    base_s = bench.BASE_STEPS * (cost[20] + cost[24] + cost[28]) / 3
    assert abs(cheaper * (cost[16] + cost[20] + cost[24] + cost[28]) / 4 - base_s) < 2.1
    assert bench.equal_time((16, 20, 24, 28))[:2] == ["--progressive-sizes", "16,20,24,28"]


@needs_fmnist
def test_quick_search_runs_each_variant_and_seed(tmp_path, monkeypatch, capsys):
    out = tmp_path / "search.json"
    monkeypatch.setattr(sys, "argv", ["recipe_search.py", "--variants", "base,t16-20-24-28",
                                      "--seeds", "0", "--quick", "--out", str(out)])
    load_bench().main()
    rows = json.loads(out.read_text())
    assert sorted(r["variant"] for r in rows) == ["base", "t16-20-24-28"]
    assert all("error" not in r and r["steps"] == 30 and 0 <= r["test_top1"] <= 1 for r in rows)
    table = capsys.readouterr().out
    assert "| base | 1 |" in table and "| t16-20-24-28 | 1 |" in table
