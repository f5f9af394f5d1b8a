"""``resnetlab sweep SPACE.yaml --trials N``: a hyperparameter sweep on Optuna.

Every ``resnetlab train`` flag is accepted and fixes what the space does not search.  The train
options come from :func:`train_options`, the one place this command depends on how ``train``
declares its flags (swap it when those are generated from one declaration).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from resnetlab.utils.errors import ConfigError

Opt = typer.Option
P = "Sweep"
# train options a sweep sets itself: trial names and directories, no resume of one run; trials
# train in one process each (the pruner's epoch hook lives there), so no --nproc
_REPLACED = {"ctx", "resume", "name", "nproc", "max_restarts"}


def train_options() -> tuple[list[inspect.Parameter], Callable[[dict[str, Any]], dict[str, Any]]]:
    """The train command's options and the function turning their values into dotted config
    keys (``{"optim.lr": 0.05, ...}``), read off ``resnetlab train`` itself."""
    from resnetlab.cli import train as train_cli

    params = [p for n, p in inspect.signature(train_cli.command, eval_str=True).parameters.items()
              if n not in _REPLACED]
    return params, lambda values: train_cli.flag_overrides(dict(values), values.get("set_"))


def _own(ctx: typer.Context,
         space: Annotated[Path, typer.Argument(help="Search space YAML: config keys -> 'loguniform 0.01 1', 'uniform 0 0.2', 'int 1 5' or a list of choices.", show_default=False)],
         trials: Annotated[int, Opt(help="Run until this many trials are complete or pruned.", rich_help_panel=P)] = 20,
         workers: Annotated[int, Opt(help="Trials in parallel on this machine (processes); run the same command on other machines against one --storage to add more.", rich_help_panel=P)] = 1,
         storage: Annotated[str | None, Opt(help="Study storage: an SQLAlchemy URL (sqlite:///f.db, postgresql://...) or journal:PATH (default: sqlite at RUNS/sweeps/STUDY.db).", rich_help_panel=P)] = None,
         study: Annotated[str | None, Opt(help="Study name (default: the space file's name).", rich_help_panel=P)] = None,
         pruner: Annotated[str, Opt(help="Stop poor trials early on the per-epoch validation metric: median, hyperband or none.", rich_help_panel=P)] = "median",
         heartbeat: Annotated[float, Opt(help="Seconds between a running trial's heartbeats; a trial silent for 3x this (killed) is failed and queued again.", rich_help_panel=P)] = 10.0,
         sampler_seed: Annotated[int | None, Opt(help="Seed of the TPE sampler (reproducible suggestions with one worker).", rich_help_panel=P)] = None,
         ) -> None: ...


def command(ctx: typer.Context, **params: Any) -> None:
    """Search hyperparameters with Optuna: each trial is an ordinary training run; prints the
    trials, writes the best config (a ready --config file) and an HTML report."""
    from resnetlab.cli.common import print_table
    from resnetlab.run.sweep_report import TRIAL_COLUMNS, summarize

    try:
        study, plan = _run(params)
    except KeyboardInterrupt:  # the cut-off trials are queued again
        print("interrupted; run the same command again to continue the study", file=sys.stderr)
        raise SystemExit(130) from None
    summary = summarize(study, plan)
    print_table(f"sweep {plan.study} ({plan.metric})", TRIAL_COLUMNS, summary.rows, numbers=False)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary.counts.items()))
    print(f"trials: {counts} (storage {plan.storage})")
    if summary.best:
        print(f"best: trial {summary.best['number']}, {plan.metric} {summary.best['value']:.4g}")
        print(f"best config: {summary.best_config} (train it: resnetlab train --config "
              f"{summary.best_config})")
    print(f"report: {summary.report}")


def _run(params: dict[str, Any]):
    from resnetlab import run
    from resnetlab.run.sweep import SweepPlan, load_space, storage_url, sweep

    _, to_overrides = train_options()
    base = run.config_with(params["config"] or "default", to_overrides(params))
    space = load_space(params["space"], base)
    name = params["study"] or Path(params["space"]).stem
    if not params["heartbeat"] > 0:
        raise ConfigError(f"--heartbeat {params['heartbeat']}: give the seconds between heartbeats, e.g. 10")
    plan = SweepPlan(space=space, base=base, trials=params["trials"], study=name,
                     storage=storage_url(params["storage"], base.runs_dir, name),
                     pruner=params["pruner"], heartbeat_s=params["heartbeat"],
                     sampler_seed=params["sampler_seed"],
                     metric=base.train.early_stop_metric)
    return sweep(plan, workers=params["workers"]), plan


command.__signature__ = inspect.Signature(
    [*inspect.signature(_own, eval_str=True).parameters.values()]
    + [p for p in train_options()[0] if p.name != "ctx"])
