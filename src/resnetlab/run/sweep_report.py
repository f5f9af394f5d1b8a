"""The end of a sweep: the trials as a table, the best config as a ready ``--config`` file
(``RUNS/sweeps/NAME-best.yaml``) and a self-contained HTML report (``RUNS/sweeps/NAME.html``:
optimisation history, parameter importance, per-parameter slices, embedded PNGs)."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resnetlab.analysis import plots
from resnetlab.analysis.report import Figure, Section, data_uri, render_report
from resnetlab.engine.config import RunConfig
from resnetlab.run.sweep import SweepPlan

__all__ = ["SweepSummary", "summarize", "trial_rows", "TRIAL_COLUMNS"]

TRIAL_COLUMNS = ["trial", "state", "value", "parameters", "run directory"]


@dataclass
class SweepSummary:
    """What a finished sweep shows: ``rows`` (one per trial, :data:`TRIAL_COLUMNS`), the best
    trial (None when no trial completed), and the files written."""

    study: str
    metric: str
    counts: dict[str, int]
    rows: list[list[str]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    best_config: Path | None = None
    report: Path | None = None


def _trials(study: Any) -> list[dict[str, Any]]:
    return [{"number": t.number, "state": t.state.name, "params": dict(t.params),
             "value": t.value if t.state.name == "COMPLETE" else _last_value(t),
             "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error")}
            for t in study.get_trials(deepcopy=False)]


def _last_value(trial: Any) -> float | None:
    """A pruned trial's last reported value (its curve was cut there)."""
    values = trial.intermediate_values
    return values[max(values)] if values else None


def trial_rows(trials: list[dict[str, Any]]) -> list[list[str]]:
    """The table of trials (:data:`TRIAL_COLUMNS`)."""
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else "-" if v is None else str(v)
    return [[str(t["number"]), t["state"].lower(), fmt(t["value"]),
             ", ".join(f"{k}={fmt(v)}" for k, v in t["params"].items()),
             t["run_dir"] or "-"] for t in trials]


def summarize(study: Any, plan: SweepPlan) -> SweepSummary:
    """Table, best config file and HTML report of ``study`` (files next to its default DB)."""
    trials = _trials(study)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"].lower()] = counts.get(t["state"].lower(), 0) + 1
    out = SweepSummary(plan.study, plan.metric, counts, trial_rows(trials))
    complete = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    folder = Path(plan.base.runs_dir) / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    if complete:
        best = study.best_trial
        out.best = next(t for t in trials if t["number"] == best.number)
        out.best_config = _write_best(out.best, plan, folder / f"{plan.study}-best.yaml")
    out.report = _write_report(trials, study, plan, out, folder / f"{plan.study}.html")
    return out


def _write_best(best: dict[str, Any], plan: SweepPlan, path: Path) -> Path:
    """The best trial's own config.yaml as a new run's config (no name, the sweep's runs_dir)."""
    cfg = RunConfig.from_yaml(Path(best["run_dir"]) / "config.yaml")
    cfg.name, cfg.runs_dir = None, plan.base.runs_dir
    head = (f"# Best of sweep {plan.study}: trial {best['number']}, {plan.metric} "
            f"{best['value']:.4g} ({best['run_dir']}).\n# Train it: resnetlab train --config {path}\n")
    path.write_text(head + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def _importances(study: Any) -> dict[str, float]:
    """fANOVA importances; empty when there are too few complete trials to fit them."""
    import warnings

    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few trials": the report says so itself
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # same report each time
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
            return {key: float(value) for key, value in found.items()}
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def _write_report(trials: list[dict[str, Any]], study: Any, plan: SweepPlan,
                  summary: SweepSummary, path: Path) -> Path:
    maximize = plan.direction == "maximize"
    kinds = {k: p.kind for k, p in plan.space.items()}
    importances = _importances(study) if summary.best else {}
    with tempfile.TemporaryDirectory() as tmp:
        figures = [Figure("optimisation history", data_uri(plots.plot_sweep_history(
            trials, Path(tmp) / "history.png", metric=plan.metric, maximize=maximize)))]
        if importances:
            figures.append(Figure("parameter importance", data_uri(
                plots.plot_importances(importances, Path(tmp) / "importance.png"))))
        figures.append(Figure("per-parameter slices", data_uri(plots.plot_sweep_slices(
            trials, kinds, Path(tmp) / "slices.png", metric=plan.metric))))
    findings = [f"{n} {state}" for state, n in sorted(summary.counts.items())]
    if summary.best:
        findings.insert(0, f"best: trial {summary.best['number']}, {plan.metric} "
                           f"{summary.best['value']:.4g}; config {summary.best_config}")
    if not importances:
        findings.append("parameter importance needs at least two complete trials that differ")
    sections = [Section("Summary", findings=findings), Section("Figures", figures=figures),
                Section("Trials", columns=TRIAL_COLUMNS, rows=summary.rows),
                Section("Search space", preformatted=yaml.safe_dump(
                    {k: p.spec() for k, p in plan.space.items()}, sort_keys=False))]
    path.write_text(render_report(f"sweep {plan.study} ({plan.metric})", sections), encoding="utf-8")
    return path
