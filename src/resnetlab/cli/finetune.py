"""``resnetlab finetune --from RUN_OR_WEIGHTS --data ...``: a run like ``resnetlab train``.

The command parses flags into config keys and calls :func:`resnetlab.run.finetune` (or
:func:`resnetlab.run.resume` with ``--resume``); the policies live in
:mod:`resnetlab.transfer.finetune`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnetlab.utils.errors import ConfigError

Opt = typer.Option
F, D, T = "Fine-tuning", "Data", "Training"


def command(
    ctx: typer.Context,
    from_: Annotated[str | None, Opt("--from", help="Pretrained run directory, checkpoint or weights file (.safetensors, .pth, .th).", rich_help_panel=F)] = None,
    freeze: Annotated[str | None, Opt(help="none, stem, stages:K (stem + K stages from the input) or backbone.", rich_help_panel=F)] = None,
    bn: Annotated[str | None, Opt(help="train, or frozen (running statistics, no gamma/beta updates).", rich_help_panel=F)] = None,
    backbone_lr_scale: Annotated[float | None, Opt(help="Backbone learning rate = this x --lr (the head gets --lr).", rich_help_panel=F)] = None,
    unfreeze_at: Annotated[int | None, Opt(help="Frozen stages start training after this many epochs.", rich_help_panel=F)] = None,
    bn_reestimate: Annotated[int | None, Opt(help="Recompute BN statistics on this many batches of the new data first.", rich_help_panel=F)] = None,
    keep_head: Annotated[bool | None, Opt("--keep-head", help="Keep the pretrained classifier even when the classes are not matched by name (same count, in order). By default it is kept only when both sides name the same classes.", rich_help_panel=F)] = None,
    model: Annotated[str | None, Opt(help="Architecture of a weights file that does not name it; a run or converted file names its own (a different --model is refused).", rich_help_panel=F)] = None,
    config: Annotated[str | None, Opt(help="Recipe name or YAML file; flags override it.", rich_help_panel=T)] = None,
    resume: Annotated[Path | None, Opt(help="Continue this fine-tune run.", rich_help_panel=T)] = None,
    name: Annotated[str | None, Opt(help="Run directory name under --runs-dir.", rich_help_panel=T)] = None,
    runs_dir: Annotated[str | None, Opt(help="Parent folder of run directories.", rich_help_panel=T)] = None,
    data: Annotated[str | None, Opt(help="fashion-mnist, mnist, cifar10, folder:PATH or csv:PATH.", rich_help_panel=D)] = None,
    data_dir: Annotated[str | None, Opt(help="Where the data set's files are.", rich_help_panel=D)] = None,
    target: Annotated[str | None, Opt(help="Target column of csv: data.", rich_help_panel=D)] = None,
    train_size: Annotated[int | None, Opt(help="Stratified subset of the training split.", rich_help_panel=D)] = None,
    val_size: Annotated[float | None, Opt(help="Held out for validation: a count or a fraction.", rich_help_panel=D)] = None,
    batch_size: Annotated[int | None, Opt(help="Training batch size.", rich_help_panel=D)] = None,
    epochs: Annotated[int | None, Opt(help="Training epochs.", rich_help_panel=T)] = None,
    lr: Annotated[float | None, Opt(help="Peak learning rate (of the head).", rich_help_panel=T)] = None,
    seed: Annotated[int | None, Opt(help="Seed.", rich_help_panel=T)] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda, mps.", rich_help_panel=T)] = None,
    progress: Annotated[bool | None, Opt("--progress/--no-progress", help="Progress bar.", rich_help_panel=T)] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Any config key section.KEY=VALUE; repeatable.", rich_help_panel=T)] = None,
) -> None:
    """Fine-tune a pretrained network on new data (a run like `resnetlab train`)."""
    from resnetlab import run
    from resnetlab.cli.common import console
    from resnetlab.cli.train import _interrupted_hint, flag_overrides, print_summary

    params = dict(ctx.params)
    overrides = flag_overrides({k: v for k, v in params.items() if k != "model"}, set_)
    # the fine-tune flags are not `resnetlab train` options (the config's FLAGS table)
    for key, flag in _FLAGS.items():
        if params.get(key) is not None:
            _check(flag, params[key])
            overrides[f"finetune.{key if key != 'from_' else 'source'}"] = params[key]
    try:
        if resume is not None:
            if from_ is not None or config is not None:
                raise ConfigError(f"--resume {resume}: the run's config.yaml names its source; "
                                  "drop --from and --config")
            result = run.resume(resume, overrides, progress=progress)
        else:
            cfg, note = run.fresh_name(run.config_with(config or "default", overrides),
                                       named_by_flag="name" in overrides)
            if note:
                console(stderr=True).print(note)
            result = run.finetune(cfg, model=model, progress=progress)
    except run.Interrupted as stop:
        console(stderr=True).print(_interrupted_hint(stop.run_dir))
        raise SystemExit(130) from None
    if result.already_finished:
        console().print(f"{result.run_dir} is finished (results.json); nothing to resume.")
        return
    print_summary(result)


_FLAGS = {"from_": "--from", "freeze": "--freeze", "bn": "--bn",
          "backbone_lr_scale": "--backbone-lr-scale", "unfreeze_at": "--unfreeze-at",
          "bn_reestimate": "--bn-reestimate", "keep_head": "--keep-head"}


def _check(flag: str, value: object) -> None:
    """One line naming the flag (the config's own check would name ``--set finetune.KEY``)."""
    from resnetlab.transfer.finetune import BN_CHOICES, parse_freeze

    if flag == "--freeze":
        parse_freeze(str(value))
    elif flag == "--bn" and value not in BN_CHOICES:
        raise ConfigError(f"--bn {value!r}: choose {' or '.join(BN_CHOICES)}")
    elif flag != "--from" and isinstance(value, (int, float)) and value < 0:
        raise ConfigError(f"{flag} {value}: must be >= 0")
