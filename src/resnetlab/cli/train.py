"""``resnetlab train``: the main job (ResNet-20 on Fashion-MNIST with the ``default`` recipe).

Precedence, lowest first: the built-in defaults, the recipe (``--config``, default ``default``;
with ``--resume`` the run's own ``config.yaml``), then flags.  The command only parses flags into
config keys, calls :func:`resnetlab.run.train` (or :func:`resnetlab.run.resume`) and prints
the summary; the run directory is described in :mod:`resnetlab.run.experiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from resnetlab.cli.options import SET_HELP, flag_overrides, options_for, with_options
from resnetlab.utils.errors import ConfigError

__all__ = ["command", "flag_overrides", "print_summary", "train_extras", "train_options"]

Opt = typer.Option
R, M, T = "Run", "Model", "Training"


def _own(
    ctx: typer.Context,
    config: Annotated[str | None, Opt(help="Recipe name (default, long) or YAML file; flags override it. \\[default: default]", rich_help_panel=R)] = None,
    resume: Annotated[Path | None, Opt(help="Continue the run in this directory exactly where its last checkpoint left off.", rich_help_panel=R)] = None,
    test_on: Annotated[str, Opt(help="Weights for the final test evaluation: best (by validation, what `resnetlab eval RUN` loads) or last.", rich_help_panel=R)] = "best",
    progress: Annotated[bool | None, Opt("--progress/--no-progress", help="Progress bar (default: when stderr is a terminal).", rich_help_panel=R)] = None,
) -> None: ...


def train_extras(
    set_: Annotated[list[str] | None, Opt("--set", help=SET_HELP, rich_help_panel=M)] = None,
    nproc: Annotated[int | None, Opt(help="Train data-parallel on this many local processes (starts torchrun); the global batch is N x --batch-size. \\[default: 1]", rich_help_panel=T)] = None,
    max_restarts: Annotated[int, Opt(help="With --nproc: restart a failed job this often, resuming from the last complete checkpoint.", rich_help_panel=T)] = 0,
) -> None:
    """``--set``, ``--nproc`` and ``--max-restarts``: the options a sweep or comparison shares."""


def train_options() -> list:
    """Every option of ``resnetlab train`` beyond its own (for commands that take them all)."""
    return options_for("train")


@with_options(_own, train_options(), train_extras)
def command(ctx: typer.Context, **params: Any) -> None:
    """Train a network; with no arguments, ResNet-20 on Fashion-MNIST (the default recipe)."""
    from resnetlab import run
    from resnetlab.cli import STARTED
    from resnetlab.cli.common import console
    from resnetlab.utils.notices import say

    config, resume, nproc = params["config"], params["resume"], params["nproc"]
    overrides = flag_overrides(params, params["set_"])
    common = dict(test_on=params["test_on"], progress=params["progress"],
                  world_size=1 if nproc is None else nproc, max_restarts=params["max_restarts"])
    try:
        if resume is None:
            cfg, note = run.fresh_name(run.config_with(config or "default", overrides),
                                       named_by_flag="name" in overrides)
            if note:
                say(note)
            result = run.train(cfg, **common, budget_from=STARTED)
        else:
            if config is not None:
                raise ConfigError(f"--config {config} with --resume {resume}: a resumed run uses "
                                  "its own config.yaml; drop --config")
            result = run.resume(resume, overrides, **common)
    except run.Interrupted as stop:
        say(_interrupted_hint(stop.run_dir))
        raise SystemExit(130) from None
    if result.already_finished:
        console().print(f"{result.run_dir} is finished (results.json); nothing to resume. "
                        f"Train longer in a new run: resnetlab train --config "
                        f"{result.run_dir / 'config.yaml'} --epochs N")
        return
    print_summary(result)


def _interrupted_hint(run_dir: Path) -> str:
    if run_dir.is_dir():
        return f"interrupted; resume with: resnetlab train --resume {run_dir}"
    return "interrupted before the first checkpoint; nothing to resume (the run directory was removed)"


def _model_label(cfg) -> str:
    """``resnet20`` or ``resnet20 (width x2)``: a wider net must not look like the plain one."""
    width = cfg.model.kwargs.get("width_mult")
    return cfg.model.name + (f" (width x{width:g})" if width not in (None, 1, 1.0) else "")


def _weights_label(results: dict[str, Any]) -> str:
    """E.g. ``best (EMA, epoch 6) + flip TTA``."""
    ema = "EMA, " if results["weights"] == "ema" else ""
    tta = " + flip TTA" if results["tta"] else ""
    return f"{Path(results['checkpoint']).name} ({ema}epoch {results['checkpoint_epoch']}){tta}"


def _accuracy(results: dict[str, Any], prefix: str) -> tuple[str, str]:
    """``("test top-1 / top-5", "93.10% / 99.80%")``; top-5 only with more than 5 classes."""
    from resnetlab.cli.common import pct

    name = prefix.rstrip("_") or results["split"]
    if results.get("task") == "regression":  # e.g. ("test RMSE / R2", "52.1 / 0.489")
        rmse, r2 = results.get(f"{prefix}rmse"), results.get(f"{prefix}r2")
        return f"{name} RMSE / R2", "-" if rmse is None else f"{rmse:.4g} / {r2:.3f}"
    top1, top5 = results[f"{prefix}top1"], results[f"{prefix}top5"]
    if results.get("num_classes", 10) <= 5:
        return f"{name} top-1", pct(top1)
    return f"{name} top-1 / top-5", f"{pct(top1)} / {pct(top5)}"


def _split_label(split: dict[str, Any] | None) -> str:
    if not split:
        return "-"
    counts = [f"{split[k]:,} {k[4:]}" for k in ("num_train", "num_val", "num_test") if split.get(k)]
    return " / ".join(counts)


def print_summary(result) -> None:
    """The table at the end of a run, then the run directory."""
    from resnetlab.cli.common import console, print_table
    from resnetlab.run.budget import budget_label

    cfg, res, run_dir = result.config, result.results, result.run_dir
    rate, unit = res["images_per_s"], res.get("rate_unit", "images/s")
    rows = [("model / data", f"{_model_label(cfg)} / {cfg.data.name}"),
            ("split", _split_label(res.get("data_split"))),
            ("epochs / steps", f"{res['epochs']:g} / {res['steps']}")]
    if res["split"] != "val":  # a final evaluation on validation is that row already
        rows.append(_accuracy(res, "val_"))
    rows += [_accuracy(res, ""), (f"{res['split']} weights", _weights_label(res)),
             ("train time", f"{res['train_time_s'] or 0:.1f} s"),
             ("wall time", f"{res['wall_time_s']:.1f} s"),
             (f"{unit} (training)", f"{rate:,.0f}" if rate else "-"),
             ("device", f"{res['environment']['device']} ({res['environment']['dtype']})"),
             ("run directory", str(run_dir))]
    if cfg.data.progressive_sizes:
        rows.insert(3, ("input sizes", " -> ".join(f"{n} px" for n in cfg.data.progressive_sizes)
                        + " (equal phases; evaluated at full size)"))
    if isinstance(cfg.train.late_freeze, float):
        rows.insert(3, ("late freeze", f"stem + first stage frozen from "
                        f"{cfg.train.late_freeze:.0%} of the steps"))
    budget = budget_label(cfg, res["steps"], res["epochs"])
    if budget:
        rows.insert(3, ("time budget", budget))
    if res.get("stopped_early"):
        rows.insert(3, ("stopped early", f"best {res['metric']} at epoch {res['best_epoch']}"))
    print_table("summary", ["", "value"], rows, numbers=False)
    console().print(f"run directory: {run_dir}")
