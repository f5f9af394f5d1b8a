"""benchmarks/time_to_accuracy.py --quick produces its report (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from helpers import write_folder

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "time_to_accuracy.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("time_to_accuracy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_mode_reports_both_arms(tmp_path, capsys):
    data = write_folder(tmp_path / "animals", per_class=16)
    out = tmp_path / "report.json"
    bench = load_bench()
    report = bench.main(["--quick", "--data", f"folder:{data}", "--train-size", "40",
                         "--val-size", "8", "--device", "cpu", "--thresholds", "0.0,1.01",
                         "--set", "train.precision=fp32", "--set", "data.batch_size=8",
                         "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["threshold"] for r in saved["rows"]] == [0.0, 1.01]
    first, never = saved["rows"]
    # every curve reaches 0% at its first evaluation and never reaches 101%
    assert first["main_job_s"] > 0 and first["textbook_s"] > 0 and first["ratio"] > 0
    assert never["main_job_s"] is None and never["textbook_s"] is None
    assert saved["arms"]["main job"]["config"]["train"]["precision"] == "fp32"
    assert saved["arms"]["textbook"]["epochs"] == 1 and report["quick"] is True
    printed = capsys.readouterr().out
    assert "not reached" in printed and "textbook/main" in printed


def test_process_mode_judges_whole_runs_per_seed(tmp_path, capsys):
    data = write_folder(tmp_path / "animals", per_class=16)
    out = tmp_path / "report.json"
    report = load_bench().main(["--process", "0,1", "--quick", "--data", f"folder:{data}",
                                "--train-size", "40", "--val-size", "8", "--device", "cpu",
                                "--set", "train.precision=fp32", "--set", "data.batch_size=8",
                                "--target", "0.0", "--worst", "0.0", "--within", "600",
                                "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["seed"] for r in saved["process_runs"]] == [0, 1] and saved["met"] is True
    for r in saved["process_runs"]:
        assert r["wall_s"] > 0 and 0 <= r["test_top1"] <= 1 and r["steps"] == 5 and r["curve"]
        assert r["dtype"] == "float32"
    assert saved["worst_top1"] == min(r["test_top1"] for r in saved["process_runs"]) == report["worst_top1"]
    assert "worst >= 0.0%, every run inside 600 s: yes" in capsys.readouterr().out


def test_process_verdict_is_the_issues_bar():
    """Met: mean >= --target, worst >= --worst, every process inside --within; each can fail."""
    bench = load_bench()
    runs = [{"seed": s, "wall_s": w, "test_top1": t, "val_top1": t, "steps": 1, "load_avg_1m": 0}
            for s, (w, t) in enumerate([(280, 0.931), (290, 0.929), (270, 0.932)])]
    args = bench.parse_args(["--process", "0,1,2"])
    assert bench.process_report(runs, args)["met"] is True  # mean 93.07%, worst 92.9%
    assert bench.process_report(runs, bench.parse_args(["--worst", "0.93"]))["met"] is False
    assert bench.process_report(runs, bench.parse_args(["--target", "0.931"]))["met"] is False
    assert bench.process_report(runs, bench.parse_args(["--within", "285"]))["met"] is False
