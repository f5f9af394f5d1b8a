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

from resnetlab.utils.errors import ConfigError

# Flags whose text becomes a list of numbers.
_LISTS = ("milestones", "betas", "progressive_sizes")

M, D, OPT, S, T, R = "Model", "Data", "Optimiser", "Schedule", "Training", "Run"
Opt = typer.Option


def command(
    ctx: typer.Context,
    config: Annotated[str | None, Opt(help="Recipe name (default, long) or YAML file; flags override it.", rich_help_panel=R)] = None,
    resume: Annotated[Path | None, Opt(help="Continue the run in this directory exactly where its last checkpoint left off.", rich_help_panel=R)] = None,
    name: Annotated[str | None, Opt(help="Run directory name under --runs-dir (never overwritten).", rich_help_panel=R)] = None,
    runs_dir: Annotated[str | None, Opt(help="Parent folder of run directories.", rich_help_panel=R)] = None,
    test_on: Annotated[str, Opt(help="Weights for the final test evaluation: best (by validation, what `resnetlab eval RUN` loads) or last.", rich_help_panel=R)] = "best",
    progress: Annotated[bool | None, Opt("--progress/--no-progress", help="Progress bar (default: when stderr is a terminal).", rich_help_panel=R)] = None,
    model: Annotated[str | None, Opt(help="Registry name (`resnetlab models` lists them).", rich_help_panel=M)] = None,
    width_mult: Annotated[float | None, Opt(help="Multiply stage widths.", rich_help_panel=M)] = None,
    shortcut: Annotated[str | None, Opt(help="Shortcut where shapes change: A (zero-pad), B (projection), C (always projection), none.", rich_help_panel=M)] = None,
    zero_init_last: Annotated[bool | None, Opt("--zero-init-last/--no-zero-init-last", help="Start each block as its skip (last BN scale 0).", rich_help_panel=M)] = None,
    drop_rate: Annotated[float | None, Opt(help="Dropout before the classifier.", rich_help_panel=M)] = None,
    drop_path: Annotated[float | None, Opt(help="Stochastic depth rate of the last block.", rich_help_panel=M)] = None,
    in_chans: Annotated[int | None, Opt(help="Input channels (folder data is converted to it).", rich_help_panel=M)] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Config key section.KEY=VALUE (e.g. --set optim.eps=1e-6) or model argument KEY=VALUE (e.g. --set num_blocks=2); repeatable.", rich_help_panel=M)] = None,
    data: Annotated[str | None, Opt(help="fashion-mnist, mnist, kmnist, cifar10, cifar100, folder:PATH or csv:PATH.", rich_help_panel=D)] = None,
    data_dir: Annotated[str | None, Opt(help="Where the data set's files are.", rich_help_panel=D)] = None,
    batch_size: Annotated[int | None, Opt(help="Training batch size.", rich_help_panel=D)] = None,
    eval_batch_size: Annotated[int | None, Opt(help="Evaluation batch size.", rich_help_panel=D)] = None,
    train_size: Annotated[int | None, Opt(help="Stratified subset of the training split.", rich_help_panel=D)] = None,
    # issue 22 item 14 (audit branch): config key data.test_size
    test_size: Annotated[int | None, Opt(help="Bound the final test to a stratified, fixed subset of this many images (a smoke run); recorded in results.json. Default: the whole test split.", rich_help_panel=D)] = None,
    val_size: Annotated[float | None, Opt(help="Held out for validation: a count (500) or a fraction (0.1); default: the data's own split.", rich_help_panel=D)] = None,
    augment: Annotated[str | None, Opt(help="Image augmentation: default (the data's own: Fashion-MNIST flip, MNIST crop:2, CIFAR crop:4,flip; folders: none, digits must not be mirrored), none, or e.g. crop:2,flip,erase:0.25 (tables get none).", rich_help_panel=D)] = None,
    target: Annotated[str | None, Opt(help="Target column of csv: data.", rich_help_panel=D)] = None,
    task: Annotated[str | None, Opt(help="csv: target is classification or regression (default: regression for a numeric target with many distinct values).", rich_help_panel=D)] = None,
    allow_single_class: Annotated[bool | None, Opt("--allow-single-class", help="Train even when the data has one class (otherwise an error).", rich_help_panel=D)] = None,
    val_dir: Annotated[str | None, Opt(help="Separate validation folder for folder: data.", rich_help_panel=D)] = None,
    image_size: Annotated[int | None, Opt(help="Resize folder images to this size.", rich_help_panel=D)] = None,
    progressive_sizes: Annotated[str | None, Opt(help="Progressive resizing: equal phases of training at these image sizes, e.g. 20,24,28 (evaluation at full size).", rich_help_panel=D)] = None,
    on_bad_image: Annotated[str | None, Opt(help="error or skip unreadable images.", rich_help_panel=D)] = None,
    cache_dir: Annotated[str | None, Opt(help="Cache decoded folder images here.", rich_help_panel=D)] = None,
    download: Annotated[bool | None, Opt("--download/--no-download", help="Download named data sets when missing.", rich_help_panel=D)] = None,
    optimizer: Annotated[str | None, Opt(help="sgd or adamw.", rich_help_panel=OPT)] = None,
    lr: Annotated[float | None, Opt(help="Peak learning rate.", rich_help_panel=OPT)] = None,
    momentum: Annotated[float | None, Opt(help="SGD momentum.", rich_help_panel=OPT)] = None,
    nesterov: Annotated[bool | None, Opt("--nesterov/--no-nesterov", help="Nesterov momentum.", rich_help_panel=OPT)] = None,
    weight_decay: Annotated[float | None, Opt(help="L2 / decoupled weight decay.", rich_help_panel=OPT)] = None,
    betas: Annotated[str | None, Opt(help="AdamW betas, e.g. 0.9,0.999.", rich_help_panel=OPT)] = None,
    eps: Annotated[float | None, Opt(help="AdamW epsilon.", rich_help_panel=OPT)] = None,
    decay_norm_and_bias: Annotated[bool | None, Opt("--decay-norm-and-bias/--no-decay-norm-and-bias", help="Also decay norm parameters and biases.", rich_help_panel=OPT)] = None,
    schedule: Annotated[str | None, Opt(help="onecycle, cosine, step or constant.", rich_help_panel=S)] = None,
    warmup_epochs: Annotated[float | None, Opt(help="Linear warm-up length in epochs.", rich_help_panel=S)] = None,
    warmup_frac: Annotated[float | None, Opt(help="Linear warm-up as a fraction of all steps.", rich_help_panel=S)] = None,
    warmup_start_frac: Annotated[float | None, Opt(help="Warm-up starts at this fraction of the peak learning rate.", rich_help_panel=S)] = None,
    milestones: Annotated[str | None, Opt(help="Step schedule epochs, e.g. 30,45.", rich_help_panel=S)] = None,
    gamma: Annotated[float | None, Opt(help="Step schedule factor.", rich_help_panel=S)] = None,
    final_lr_frac: Annotated[float | None, Opt(help="Final learning rate as a fraction of the peak.", rich_help_panel=S)] = None,
    epochs: Annotated[int | None, Opt(help="Training epochs.", rich_help_panel=T)] = None,
    time_budget: Annotated[str | None, Opt(help="Wall time for the whole run, e.g. 5m or 90s: a few steps are timed first and the step count is fixed to end inside it (saved in config.yaml).", rich_help_panel=T)] = None,
    max_steps: Annotated[int | None, Opt(help="Stop after this many steps (smoke tests).", rich_help_panel=T)] = None,
    label_smoothing: Annotated[float | None, Opt(help="Label smoothing.", rich_help_panel=T)] = None,
    ema: Annotated[float | None, Opt(help="Weight EMA decay per step, e.g. 0.999.", rich_help_panel=T)] = None,
    clip_grad: Annotated[float | None, Opt(help="Clip the gradient norm to this.", rich_help_panel=T)] = None,
    early_stop: Annotated[int | None, Opt(help="Stop after this many epochs without improvement.", rich_help_panel=T)] = None,
    early_stop_metric: Annotated[str | None, Opt(help="Metric for early stopping and best checkpoint.", rich_help_panel=T)] = None,
    max_nonfinite_steps: Annotated[int | None, Opt(help="Stop after this many NaN/inf losses in a row.", rich_help_panel=T)] = None,
    precision: Annotated[str | None, Opt(help="auto, fp32, bf16 or fp16.", rich_help_panel=T)] = None,
    channels_last: Annotated[bool | None, Opt("--channels-last/--no-channels-last", help="NHWC memory layout.", rich_help_panel=T)] = None,
    compile: Annotated[bool | None, Opt("--compile/--no-compile", help="torch.compile the model.", rich_help_panel=T)] = None,
    nproc: Annotated[int | None, Opt(help="Train data-parallel on this many local processes (starts torchrun); the global batch is N x --batch-size.", rich_help_panel=T)] = None,
    max_restarts: Annotated[int, Opt(help="With --nproc: restart a failed job this often, resuming from the last complete checkpoint.", rich_help_panel=T)] = 0,
    sync_bn: Annotated[bool | None, Opt("--sync-bn/--no-sync-bn", help="BatchNorm statistics over the global batch of all processes (data-parallel runs).", rich_help_panel=T)] = None,
    deterministic: Annotated[bool | None, Opt("--deterministic/--no-deterministic", help="Deterministic algorithms (bit-exact resume).", rich_help_panel=T)] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda, cuda:1, mps.", rich_help_panel=T)] = None,
    seed: Annotated[int | None, Opt(help="Seed of the batch order, augmentation and initialisation (the train/val split is fixed).", rich_help_panel=T)] = None,
    log_every: Annotated[int | None, Opt(help="Steps between steps.csv rows.", rich_help_panel=T)] = None,
    checkpoint_every: Annotated[int | None, Opt(help="Steps between mid-epoch checkpoints.", rich_help_panel=T)] = None,
    tta: Annotated[bool | None, Opt("--tta/--no-tta", help="Flip test-time augmentation in the final evaluation (only when training flips: never for a folder without --augment flip).", rich_help_panel=T)] = None,
) -> None:
    """Train a network; with no arguments, ResNet-20 on Fashion-MNIST (the default recipe)."""
    from resnetlab import run
    from resnetlab.cli.common import console

    overrides = flag_overrides(dict(ctx.params), set_)
    try:
        if resume is None:
            cfg, note = run.fresh_name(run.config_with(config or "default", overrides),
                                       named_by_flag="name" in overrides)
            if note:
                console(stderr=True).print(note)
            result = run.train(cfg, test_on=test_on, progress=progress,
                               world_size=1 if nproc is None else nproc, max_restarts=max_restarts)
        else:
            if config is not None:
                raise ConfigError(f"--config {config} with --resume {resume}: a resumed run uses "
                                  "its own config.yaml; drop --config")
            result = run.resume(resume, overrides, test_on=test_on, progress=progress,
                                world_size=1 if nproc is None else nproc, max_restarts=max_restarts)
    except run.Interrupted as stop:
        console(stderr=True).print(_interrupted_hint(stop.run_dir))
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


def flag_overrides(params: dict[str, Any], set_items: list[str] | None) -> dict[str, Any]:
    """Dotted config keys for every flag the user gave (None means "not given") and every
    ``--set``: ``section.key=value`` sets a config key, ``key=value`` a model argument."""
    from resnetlab.cli.common import parse_number_list, parse_set
    from resnetlab.engine.config import FLAGS  # the one flag table (imported late: torch)

    keys = {flag[2:].replace("-", "_"): key for key, flag in FLAGS.items()}  # param -> key
    for name in _LISTS:
        params[name] = parse_number_list(params.get(name), f"--{name.replace('_', '-')}")
    out = {keys[k]: v for k, v in params.items() if k in keys and v is not None}
    for key, value in parse_set(set_items).items():
        out[key if "." in key else f"model.kwargs.{key}"] = value
    # The warm-up is given one way or the other; a flag replaces the recipe's way.
    for given, other in (("warmup_epochs", "warmup_frac"), ("warmup_frac", "warmup_epochs")):
        if f"schedule.{given}" in out:
            out.setdefault(f"schedule.{other}", 0.0)
    if "train.time_budget" in out:  # a budget given now is planned now, not a saved config's steps
        out.setdefault("train.steps", None)
    _refuse_image_augment_for_tables(out)
    return out


def _refuse_image_augment_for_tables(out: dict[str, Any]) -> None:
    """A recipe's image augmentation is dropped for tables by the data layer; an ``--augment``
    the user typed for a table is a mistake worth saying (the data layer cannot tell the two)."""
    augment, data = out.get("data.augment"), str(out.get("data.name", ""))
    if data.startswith("csv:") and augment not in (None, "none", "auto", "default"):
        raise ConfigError(f"--augment {augment}: --data {data} is a table; image augmentation "
                          "does not apply to rows (drop --augment)")


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
    budget = budget_label(cfg, res["steps"], res["epochs"])
    if budget:
        rows.insert(3, ("time budget", budget))
    if res.get("stopped_early"):
        rows.insert(3, ("stopped early", f"best {res['metric']} at epoch {res['best_epoch']}"))
    print_table("summary", ["", "value"], rows, numbers=False)
    console().print(f"run directory: {run_dir}")
