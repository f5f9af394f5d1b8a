"""``resnetlab sweep SPACE.yaml --trials N``: a hyperparameter sweep on Optuna.

Every ``resnetlab train`` flag is accepted and fixes what the space does not search: the
options are generated from the run options' declarations (:mod:`resnetlab.cli.options`), as
for ``train`` itself, so the two commands cannot drift apart.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from resnetlab.cli.options import flag_overrides, options_for, with_options
from resnetlab.cli.train import train_extras
from resnetlab.utils.errors import ConfigError

Opt = typer.Option
P = "Sweep"
# train's --set; not --nproc/--max-restarts: trials train in one process each (the pruner's
# epoch hook lives there)
_SET = [p for p in inspect.signature(train_extras, eval_str=True).parameters.values() if p.name == "set_"]


def _own(ctx: typer.Context,
         space: Annotated[Path, typer.Argument(help="Search space YAML: config keys -> 'loguniform 0.01 1', 'uniform 0 0.2', 'int 1 5' or a list of choices.", show_default=False)],
         trials: Annotated[int, Opt(help="Run until this many trials are complete or pruned.", rich_help_panel=P)] = 20,
         workers: Annotated[int, Opt(help="Trials in parallel on this machine (processes); run the same command on other machines against one --storage to add more.", rich_help_panel=P)] = 1,
         storage: Annotated[str | None, Opt(help="Study storage: an SQLAlchemy URL (sqlite:///f.db, postgresql://...) or journal:PATH (default: sqlite at RUNS/sweeps/STUDY.db).", rich_help_panel=P)] = None,
         study: Annotated[str | None, Opt(help="Study name (default: the space file's name).", rich_help_panel=P)] = None,
         pruner: Annotated[str, Opt(help="Stop poor trials early on the per-epoch validation metric: median, hyperband or none.", rich_help_panel=P)] = "median",
         heartbeat: Annotated[float, Opt(help="Seconds between a running trial's heartbeats; a trial silent for 3x this (killed) is failed and queued again.", rich_help_panel=P)] = 10.0,
         sampler_seed: Annotated[int | None, Opt(help="Seed of the TPE sampler (reproducible suggestions with one worker).", rich_help_panel=P)] = None,
         config: Annotated[str | None, Opt(help="Recipe every trial starts from (name or YAML file); flags override it. \\[default: default]", rich_help_panel="Run")] = None,
         ) -> None: ...


# the sweep's own options, then every train option but --name (the sweep names its trials)
@with_options(_own, options_for("train", exclude=("name",)), _SET)
def command(ctx: typer.Context, **params: Any) -> None:
    """Search hyperparameters with Optuna: each trial is an ordinary training run; prints the
    trials, writes the best config (a ready --config file) and an HTML report."""
    from resnetlab.cli.common import print_table
    from resnetlab.run.sweep_report import TRIAL_COLUMNS, summarize
    from resnetlab.utils.notices import say

    try:
        study, plan = _run(params)
    except KeyboardInterrupt:  # the cut-off trials are queued again
        say("interrupted; run the same command again to continue the study")
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

    base = run.config_with(params["config"] or "default", flag_overrides(params, params["set_"]))
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
