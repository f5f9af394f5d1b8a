"""``resnetlab finetune --from RUN_OR_WEIGHTS --data ...``: a run like ``resnetlab train``.

The command parses flags into config keys and calls :func:`resnetlab.run.finetune` (or
:func:`resnetlab.run.resume` with ``--resume``); the policies live in
:mod:`resnetlab.transfer.finetune`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnetlab.cli.options import SET_HELP, flag_overrides, options_for, with_options
from resnetlab.utils.errors import ConfigError

Opt = typer.Option
F, T = "Fine-tuning", "Run"
# The architecture comes from the source: only the regularisers of the model may change.
_FROM_SOURCE = ("model.name", "model.kwargs.width_mult", "model.kwargs.shortcut",
                "model.kwargs.zero_init_last", "model.kwargs.in_chans")


def _own(
    ctx: typer.Context,
    model: Annotated[str | None, Opt(help="Architecture of a weights file that does not name it.", rich_help_panel=F)] = None,
    config: Annotated[str | None, Opt(help="Recipe name or YAML file; flags override it. \\[default: default]", rich_help_panel=T)] = None,
    resume: Annotated[Path | None, Opt(help="Continue this fine-tune run.", rich_help_panel=T)] = None,
    progress: Annotated[bool | None, Opt("--progress/--no-progress", help="Progress bar.", rich_help_panel=T)] = None,
    set_: Annotated[list[str] | None, Opt("--set", help=SET_HELP, rich_help_panel="Model")] = None,
) -> None: ...


@with_options(_own, options_for("finetune", section="finetune"), options_for("finetune", exclude=_FROM_SOURCE))
def command(ctx: typer.Context, **params) -> None:
    """Fine-tune a pretrained network on new data (a run like `resnetlab train`)."""
    from resnetlab import run
    from resnetlab.cli.common import console
    from resnetlab.cli.train import _interrupted_hint, print_summary
    from resnetlab.utils.notices import say

    resume, config, progress = params["resume"], params["config"], params["progress"]
    overrides = flag_overrides(params, params["set_"])
    try:
        if resume is not None:
            if params["from_"] is not None or config is not None:
                raise ConfigError(f"--resume {resume}: the run's config.yaml names its source; "
                                  "drop --from and --config")
            result = run.resume(resume, overrides, progress=progress)
        else:
            cfg, note = run.fresh_name(run.config_with(config or "default", overrides),
                                       named_by_flag="name" in overrides)
            if note:
                say(note)
            result = run.finetune(cfg, model=params["model"], progress=progress)
    except run.Interrupted as stop:
        say(_interrupted_hint(stop.run_dir))
        raise SystemExit(130) from None
    if result.already_finished:
        console().print(f"{result.run_dir} is finished (results.json); nothing to resume.")
        return
    print_summary(result)
