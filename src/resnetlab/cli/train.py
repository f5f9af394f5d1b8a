"""``resnetlab train``: the main job (ResNet-20 on Fashion-MNIST with ``configs/default.yaml``).

Precedence, lowest first: the built-in defaults, the recipe (``--config``, default
``configs/default.yaml``; with ``--resume`` the run's own ``config.yaml``), then flags.  The run
directory gets ``config.yaml`` (the fully resolved config: ``resnetlab train --config
runs/X/config.yaml`` repeats the run), ``metrics.csv``, ``steps.csv``, ``checkpoints/{last,best}``,
``curves.png``, ``confusion.png`` and ``results.json`` (the final evaluation).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from resnetlab.utils.errors import ConfigError

# CLI flag -> dotted RunConfig key (``--set`` and the model flags write model.kwargs.*).
FLAG_KEYS: dict[str, str] = {
    "model": "model.name", "drop_rate": "model.kwargs.drop_rate",
    "drop_path": "model.kwargs.drop_path_rate", "width_mult": "model.kwargs.width_mult",
    "zero_init_last": "model.kwargs.zero_init_last", "shortcut": "model.kwargs.shortcut",
    "in_chans": "model.kwargs.in_chans",
    "data": "data.name", "data_dir": "data.data_dir", "batch_size": "data.batch_size",
    "eval_batch_size": "data.eval_batch_size", "val_size": "data.val_size",
    "train_size": "data.train_size", "augment": "data.augment", "target": "data.target",
    "val_dir": "data.val_dir", "image_size": "data.image_size",
    "on_bad_image": "data.on_bad_image", "cache_dir": "data.cache_dir", "download": "data.download",
    "optimizer": "optim.name", "lr": "optim.lr", "momentum": "optim.momentum",
    "nesterov": "optim.nesterov", "weight_decay": "optim.weight_decay",
    "decay_norm_and_bias": "optim.decay_norm_and_bias",
    "schedule": "schedule.name", "warmup_epochs": "schedule.warmup_epochs",
    "warmup_frac": "schedule.warmup_frac", "milestones": "schedule.milestones",
    "gamma": "schedule.gamma", "final_lr_frac": "schedule.final_lr_frac",
    "epochs": "train.epochs", "max_steps": "train.max_steps",
    "label_smoothing": "train.label_smoothing", "ema": "train.ema_decay",
    "clip_grad": "train.clip_grad_norm", "early_stop": "train.early_stop_patience",
    "early_stop_metric": "train.early_stop_metric", "precision": "train.precision",
    "channels_last": "train.channels_last", "compile": "train.compile",
    "deterministic": "train.deterministic", "device": "train.device", "seed": "train.seed",
    "log_every": "train.log_every", "checkpoint_every": "train.checkpoint_every",
    "tta": "train.tta", "name": "name", "runs_dir": "runs_dir",
}

M, D, OPT, S, T, R = "Model", "Data", "Optimiser", "Schedule", "Training", "Run"
Opt = typer.Option


def command(
    ctx: typer.Context,
    config: Annotated[str | None, Opt(help="Recipe YAML or name in configs/ (default: default); flags override it.", rich_help_panel=R)] = None,
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
    set_: Annotated[list[str] | None, Opt("--set", help="Model argument KEY=VALUE (repeatable), e.g. --set block_drop_rate=0.1.", rich_help_panel=M)] = None,
    data: Annotated[str | None, Opt(help="fashion-mnist, mnist, kmnist, cifar10, cifar100, folder:PATH or csv:PATH.", rich_help_panel=D)] = None,
    data_dir: Annotated[str | None, Opt(help="Where the data set's files are.", rich_help_panel=D)] = None,
    batch_size: Annotated[int | None, Opt(help="Training batch size.", rich_help_panel=D)] = None,
    eval_batch_size: Annotated[int | None, Opt(help="Evaluation batch size.", rich_help_panel=D)] = None,
    train_size: Annotated[int | None, Opt(help="Stratified subset of the training split.", rich_help_panel=D)] = None,
    val_size: Annotated[int | None, Opt(help="Validation images held out of training.", rich_help_panel=D)] = None,
    augment: Annotated[str | None, Opt(help="default, none, or e.g. crop:2,flip,erase:0.25.", rich_help_panel=D)] = None,
    target: Annotated[str | None, Opt(help="Target column of csv: data.", rich_help_panel=D)] = None,
    val_dir: Annotated[str | None, Opt(help="Separate validation folder for folder: data.", rich_help_panel=D)] = None,
    image_size: Annotated[int | None, Opt(help="Resize folder images to this size.", rich_help_panel=D)] = None,
    on_bad_image: Annotated[str | None, Opt(help="error or skip unreadable images.", rich_help_panel=D)] = None,
    cache_dir: Annotated[str | None, Opt(help="Cache decoded folder images here.", rich_help_panel=D)] = None,
    download: Annotated[bool | None, Opt("--download/--no-download", help="Download named data sets when missing.", rich_help_panel=D)] = None,
    optimizer: Annotated[str | None, Opt(help="sgd or adamw.", rich_help_panel=OPT)] = None,
    lr: Annotated[float | None, Opt(help="Peak learning rate.", rich_help_panel=OPT)] = None,
    momentum: Annotated[float | None, Opt(help="SGD momentum.", rich_help_panel=OPT)] = None,
    nesterov: Annotated[bool | None, Opt("--nesterov/--no-nesterov", help="Nesterov momentum.", rich_help_panel=OPT)] = None,
    weight_decay: Annotated[float | None, Opt(help="L2 / decoupled weight decay.", rich_help_panel=OPT)] = None,
    decay_norm_and_bias: Annotated[bool | None, Opt("--decay-norm-and-bias/--no-decay-norm-and-bias", help="Also decay norm parameters and biases.", rich_help_panel=OPT)] = None,
    schedule: Annotated[str | None, Opt(help="onecycle, cosine, step or constant.", rich_help_panel=S)] = None,
    warmup_epochs: Annotated[float | None, Opt(help="Linear warm-up length in epochs.", rich_help_panel=S)] = None,
    warmup_frac: Annotated[float | None, Opt(help="Linear warm-up as a fraction of all steps.", rich_help_panel=S)] = None,
    milestones: Annotated[str | None, Opt(help="Step schedule epochs, e.g. 30,45.", rich_help_panel=S)] = None,
    gamma: Annotated[float | None, Opt(help="Step schedule factor.", rich_help_panel=S)] = None,
    final_lr_frac: Annotated[float | None, Opt(help="Final learning rate as a fraction of the peak.", rich_help_panel=S)] = None,
    epochs: Annotated[int | None, Opt(help="Training epochs.", rich_help_panel=T)] = None,
    max_steps: Annotated[int | None, Opt(help="Stop after this many steps (smoke tests).", rich_help_panel=T)] = None,
    label_smoothing: Annotated[float | None, Opt(help="Label smoothing.", rich_help_panel=T)] = None,
    ema: Annotated[float | None, Opt(help="Weight EMA decay per step, e.g. 0.999.", rich_help_panel=T)] = None,
    clip_grad: Annotated[float | None, Opt(help="Clip the gradient norm to this.", rich_help_panel=T)] = None,
    early_stop: Annotated[int | None, Opt(help="Stop after this many epochs without improvement.", rich_help_panel=T)] = None,
    early_stop_metric: Annotated[str | None, Opt(help="Metric for early stopping and best checkpoint.", rich_help_panel=T)] = None,
    precision: Annotated[str | None, Opt(help="auto, fp32, bf16 or fp16.", rich_help_panel=T)] = None,
    channels_last: Annotated[bool | None, Opt("--channels-last/--no-channels-last", help="NHWC memory layout.", rich_help_panel=T)] = None,
    compile: Annotated[bool | None, Opt("--compile/--no-compile", help="torch.compile the model.", rich_help_panel=T)] = None,
    deterministic: Annotated[bool | None, Opt("--deterministic/--no-deterministic", help="Deterministic algorithms (bit-exact resume).", rich_help_panel=T)] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda, cuda:1, mps.", rich_help_panel=T)] = None,
    seed: Annotated[int | None, Opt(help="Seed of the batch order, augmentation and initialisation (the train/val split is fixed).", rich_help_panel=T)] = None,
    log_every: Annotated[int | None, Opt(help="Steps between steps.csv rows.", rich_help_panel=T)] = None,
    checkpoint_every: Annotated[int | None, Opt(help="Steps between mid-epoch checkpoints.", rich_help_panel=T)] = None,
    tta: Annotated[bool | None, Opt("--tta/--no-tta", help="Flip test-time augmentation in the final evaluation.", rich_help_panel=T)] = None,
) -> None:
    """Train a network; with no arguments, ResNet-20 on Fashion-MNIST (configs/default.yaml)."""
    from resnetlab.cli.common import parse_number_list, parse_set

    if test_on not in ("last", "best"):
        raise ConfigError(f"--test-on {test_on!r}: choose last or best")
    params = dict(ctx.params)
    params["milestones"] = parse_number_list(milestones, "--milestones")
    overrides = _overrides(params, parse_set(set_))
    cfg = resolve_config(config, resume, overrides)
    run_training(cfg, resume=resume, test_on=test_on, progress=progress)


def _overrides(params: dict[str, Any], model_kwargs: dict[str, str]) -> dict[str, Any]:
    """Dotted config keys for every flag the user gave (None means "not given")."""
    out = {FLAG_KEYS[k]: v for k, v in params.items() if k in FLAG_KEYS and v is not None}
    out.update({f"model.kwargs.{k}": v for k, v in model_kwargs.items()})
    # The warm-up is given one way or the other; a flag replaces the recipe's way.
    for given, other in (("warmup_epochs", "warmup_frac"), ("warmup_frac", "warmup_epochs")):
        if f"schedule.{given}" in out:
            out.setdefault(f"schedule.{other}", 0.0)
    return out


# What a resumed run cannot change: its checkpoint holds this network trained on this data, and
# the seed fixes the batch order and augmentation of the steps still to come.
_FROZEN_ON_RESUME = ("model.", "data.", "train.seed")
# Keys that only say where things are, so they may change on resume.
_MOVABLE = ("data.data_dir", "data.cache_dir", "data.download", "train.device")


def resolve_config(config: str | None, resume: Path | None, overrides: dict[str, Any]):
    """The run's config: recipe (or the resumed run's config.yaml), then flag overrides."""
    from resnetlab.cli.common import locate_config
    from resnetlab.engine import RunConfig, apply_overrides

    if resume is None:
        path = locate_config(config or "default")
        cfg = apply_overrides(RunConfig.from_yaml(path), overrides, source="flags")
        return _fresh_name(cfg, named_by_flag="name" in overrides)
    if config is not None:
        raise ConfigError(f"--config {config} with --resume {resume}: a resumed run uses its own "
                          "config.yaml; drop --config")
    for flag, key in (("--name", "name"), ("--runs-dir", "runs_dir")):
        if key in overrides:
            raise ConfigError(f"{flag} with --resume {resume}: the run directory is {resume}")
    saved_path = Path(resume) / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"--resume {resume}: no config.yaml there (not a run directory)")
    saved = RunConfig.from_yaml(saved_path)
    cfg = apply_overrides(saved, overrides, source="flags")
    _check_resume_changes(saved, cfg, resume)
    return cfg


def _fresh_name(cfg, named_by_flag: bool):
    """A ``name`` that came from a config file (a run's saved config.yaml) and is taken gets
    a new timestamped name instead: ``--config runs/X/config.yaml`` repeats X, never overwrites
    it.  A taken ``--name`` given as a flag is an error (run directories are never reused)."""
    if cfg.name is None or not (Path(cfg.runs_dir) / cfg.name).exists():
        return cfg
    taken = Path(cfg.runs_dir) / cfg.name
    if named_by_flag:
        raise ConfigError(f"run directory {taken} already exists; use --resume {taken} "
                          "or another --name")
    from resnetlab.cli.common import console

    console(stderr=True).print(f"{taken} exists; this run gets a new name (pass --name to choose)")
    cfg.name = None
    return cfg


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "kwargs":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_resume_changes(saved, cfg, resume: Path) -> None:
    """A resumed run must keep its model and data; other changes are reported."""
    before, after = _flatten(saved.to_dict()), _flatten(cfg.to_dict())
    changed = [k for k in after if after[k] != before.get(k)]
    for key in changed:
        if key.startswith(_FROZEN_ON_RESUME) and key not in _MOVABLE:
            flag = "--" + key.split(".")[-1].replace("_", "-")
            flag = {"model.name": "--model", "data.name": "--data"}.get(key, flag)
            raise ConfigError(f"--resume {resume}: the run was trained with {key}={before.get(key)!r}; "
                              f"{flag} {after[key]!r} does not match its checkpoint (drop {flag}, or "
                              "start a new run)")
    if changed:
        from resnetlab.cli.common import console

        console(stderr=True).print("resuming with changed settings: " + ", ".join(
            f"{k} {before.get(k)!r} -> {after[k]!r}" for k in changed))


def run_training(cfg, *, resume: Path | None, test_on: str, progress: bool | None) -> dict:
    """Build data and model, fit, evaluate once, draw the plots, print the summary.

    Under ``torchrun`` every rank runs this; ``fit`` and ``evaluate`` shard the batches and only
    rank 0 writes files or prints.
    """
    from resnetlab.engine import distributed, fit
    from resnetlab.utils import resolve_device

    start = time.perf_counter()
    info, device = distributed.init_distributed(resolve_device(cfg.train.device))
    try:
        bundle, model = build_data_and_model(cfg, device)
        run_dir = _run_dir(cfg, resume, info.is_main)
        extra = {"model": model.build_args, "data": bundle.meta, "classes": bundle.classes}
        fitted = fit(model, bundle.train, bundle.val, cfg, run_dir, num_classes=bundle.num_classes,
                     extra_meta=extra, resume=resume is not None, progress=progress)
        results = final_evaluation(model, bundle, cfg, fitted, test_on, device)
        results["wall_time_s"] = time.perf_counter() - start
        if info.is_main:
            write_outputs(run_dir, results, bundle.classes)
            print_summary(cfg, fitted, results, run_dir)
        return results
    finally:
        distributed.cleanup()


def build_data_and_model(cfg, device):
    """The data bundle of ``cfg.data`` and a freshly initialised network that fits it."""
    from resnetlab.cli.common import data_kwargs
    from resnetlab.data import build_data
    from resnetlab.utils import seed_everything

    bundle = build_data(cfg.data.name, **data_kwargs(
        cfg.data, seed=cfg.train.seed, device=device, channels_last=cfg.train.channels_last,
        in_chans=cfg.model.kwargs.get("in_chans")))
    seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
    return bundle, build_model(cfg, bundle)


def _run_dir(cfg, resume: Path | None, main: bool) -> Path:
    """The resumed directory, or a new one made by rank 0 and shared with the other ranks."""
    from resnetlab.engine import distributed, new_run_dir

    if resume is not None:
        if main:
            _announce_resume(Path(resume))
        return Path(resume)
    made = new_run_dir(cfg.runs_dir, cfg.name, model=cfg.model.name, data=cfg.data.name) if main else None
    return Path(distributed.broadcast_object(str(made) if made else None))


def _announce_resume(run_dir: Path) -> None:
    from resnetlab.checkpoint import resolve_checkpoint_dir
    from resnetlab.cli.common import console

    found = resolve_checkpoint_dir(run_dir / "checkpoints" / "last")
    if found is None:
        raise ConfigError(f"--resume {run_dir}: no checkpoints/last there (the run stopped "
                          "before its first checkpoint); start a new run")
    step = json.loads((found / "meta.json").read_text()).get("step")
    console(stderr=True).print(f"resuming {run_dir} at step {step}")


def build_model(cfg, bundle):
    """``create_model`` with the data's class count and input channels (or features)."""
    from resnetlab import create_model, model_info
    from resnetlab.cli.common import check_input_fits, input_size

    kind = model_info(cfg.model.name).get("input_kind", "image")
    key = "in_features" if kind == "vector" else "in_chans"
    kwargs = dict(cfg.model.kwargs)
    check_input_fits(cfg.model.name, kind, kwargs.get(key), bundle, cfg.data.name)
    given = kwargs.get("num_classes")
    if given is not None and given != bundle.num_classes:
        raise ConfigError(f"--set num_classes={given}: --data {cfg.data.name} has "
                          f"{bundle.num_classes} classes; drop num_classes")
    kwargs.update({key: input_size(kind, bundle.input_shape), "num_classes": bundle.num_classes})
    return create_model(cfg.model.name, **kwargs)


def final_evaluation(model, bundle, cfg, fitted, test_on: str, device) -> dict[str, Any]:
    """Evaluate the ``test_on`` checkpoint once on the test split (validation if none)."""
    from resnetlab.checkpoint import load_checkpoint
    from resnetlab.data import flip_tta
    from resnetlab.engine import evaluate
    from resnetlab.utils import resolve_dtype

    path = (fitted.best_checkpoint if test_on == "best" else None) or fitted.last_checkpoint
    ckpt = load_checkpoint(path, train_state=False)
    ckpt.load_into(model)
    split, loader = ("test", bundle.test) if bundle.test is not None else ("val", bundle.val)
    tta = flip_tta if cfg.train.tta and len(bundle.input_shape) == 3 else None
    result = evaluate(model, loader, device=device, dtype=resolve_dtype(cfg.train.precision, device),
                      num_classes=bundle.num_classes, tta=tta,
                      channels_last=cfg.train.channels_last)
    last = fitted.history[-1] if fitted.history else {}
    row = ckpt.meta.get("metrics") or last  # the epoch these weights come from
    return {
        "split": split, "checkpoint": str(path), "weights": ckpt.meta.get("weights", "model"),
        "checkpoint_epoch": ckpt.meta.get("epoch"), "tta": tta is not None,
        "loss": result.loss, "top1": result.top1, "top5": result.top5,
        "num_samples": result.num_samples, "per_class": result.per_class,
        "confusion": result.confusion, "val_top1": row.get("val_top1"),
        "val_top5": row.get("val_top5"), "train_time_s": last.get("elapsed_s"),
        "images_per_s": training_rate(fitted.history, cfg.data.batch_size),
        "steps": fitted.steps, "epochs": fitted.epochs_run,
    }


def training_rate(history: list[dict[str, Any]], batch_size: int) -> float | None:
    """Images/s over the whole run, training steps only: total images / total step time."""
    images = seconds = 0.0
    previous = 0
    for row in history:
        n = (row["step"] - previous) * batch_size
        previous = row["step"]
        if row.get("images_per_s"):
            images, seconds = images + n, seconds + n / row["images_per_s"]
    return images / seconds if seconds else None


def write_outputs(run_dir: Path, results: dict[str, Any], classes: list[str]) -> None:
    """``results.json``, ``curves.png`` (from metrics.csv) and ``confusion.png``."""
    from resnetlab.analysis import plot_confusion, plot_curves

    (run_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if (run_dir / "metrics.csv").is_file():
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png", title=run_dir.name)
    title = (f"{results['split']} top-1 {100 * results['top1']:.2f}% "
             f"({Path(results['checkpoint']).name} checkpoint{', flip TTA' if results['tta'] else ''})")
    plot_confusion(results["confusion"], classes, run_dir / "confusion.png", title=title)


def _weights_label(results: dict[str, Any]) -> str:
    """E.g. ``best (EMA, epoch 6) + flip TTA``."""
    ema = "EMA, " if results["weights"] == "ema" else ""
    tta = " + flip TTA" if results["tta"] else ""
    return f"{Path(results['checkpoint']).name} ({ema}epoch {results['checkpoint_epoch']}){tta}"


def print_summary(cfg, fitted, results: dict[str, Any], run_dir: Path) -> None:
    """The table at the end of a run, then the run directory."""
    from resnetlab.cli.common import console, pct, print_table

    split = results["split"]
    rate = results["images_per_s"]
    rows = [
        ("model / data", f"{cfg.model.name} / {cfg.data.name}"),
        ("epochs / steps", f"{results['epochs']:g} / {results['steps']}"),
        ("val top-1 / top-5", f"{pct(results['val_top1'])} / {pct(results['val_top5'])}"),
        (f"{split} top-1 / top-5", f"{pct(results['top1'])} / {pct(results['top5'])}"),
        (f"{split} weights", _weights_label(results)),
        ("train time", f"{results['train_time_s'] or 0:.1f} s"),
        ("wall time", f"{results['wall_time_s']:.1f} s"),
        ("images/s (training)", f"{rate:,.0f}" if rate else "-"),
        ("run directory", str(run_dir)),
    ]
    if fitted.stopped_early:
        rows.insert(2, ("stopped early", f"best {fitted.metric} at epoch {fitted.best_epoch}"))
    print_table("summary", ["", "value"], rows, numbers=False)
    console().print(f"run directory: {run_dir}")
