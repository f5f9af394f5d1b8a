"""Typed run configuration: dataclasses <-> YAML (DESIGN.md, style point 4).

Only plain values live here (str, int, float, bool, lists, dicts), so a config is JSON/YAML-able
and the saved ``config.yaml`` of a run reproduces it with ``resnetlab train --config``.
Every user mistake (unknown key, wrong type) is a one-line :class:`ConfigError` naming the key
and the file it came from.

Each run option is declared once, as a field below: ``opt(default, flag=, help=, check=)``.
The command-line flags of ``train``/``finetune``/``compare`` (:mod:`resnetlab.cli.options`),
the ``--set`` keys, the checks and their one-line errors, and the options table of the docs
(:func:`options_markdown`) are all generated from these declarations.  Adding an option means
adding one field here, plus the code that uses it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Union

import yaml

from resnetlab.utils.duration import parse_duration
from resnetlab.utils.errors import ConfigError

__all__ = [
    "ModelConfig", "DataConfig", "FinetuneConfig", "OptimConfig", "ScheduleConfig", "TrainConfig", "RunConfig",
    "DistributedRecord",
    "apply_overrides", "FLAGS", "CHECKS", "OPTIONS", "Option", "flag_for", "validate", "options_markdown",
    "default_recipe", "effective_default", "options_page",
]


class Check(NamedTuple):
    """A range check and what the user reads when it fails (``"must be a finite number > 0"``)."""

    ok: Callable[[Any], bool]
    says: str


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], bool]:
    def check(x: Any) -> bool:
        return _finite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    return check


def _duration_ok(value: Any) -> bool:
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


def _one_of(*choices: str, says: str | None = None) -> Check:
    return Check(lambda v: v in choices, says or "must be " + " or ".join(
        [", ".join(choices[:-1]), choices[-1]] if len(choices) > 2 else choices))


_INF = math.inf
POSITIVE = Check(_in(0, _INF, lo_open=True), "must be a finite number > 0")
NON_NEGATIVE = Check(_in(0, _INF), "must be a finite number >= 0")
UNIT = Check(_in(0, 1), "must be in [0, 1]")
UNIT_OPEN = Check(_in(0, 1, hi_open=True), "must be in [0, 1)")
COUNT = Check(_in(1, _INF), "must be at least 1")

# metrics.csv columns that can pick the best checkpoint; True = higher is better
METRICS = {"val_top1": True, "val_top5": True, "val_loss": False, "train_top1": True, "train_loss": False,
           "val_rmse": False, "val_r2": True, "train_rmse": False}  # the last three: regression
FREEZE_CHOICES = "none, stem, stages:K or backbone"
_FREEZE = re.compile(r"none|stem|backbone|stages:\d+")


def opt(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
        flag: str | None = None, help: str = "", check: Check | None = None,  # noqa: A002
        negatable: bool = True, only: str | None = None, shown: str | None = None) -> Any:
    """A config field that is also a run option.

    ``flag``: the command-line name (None: reached with ``--set section.key=value`` only);
    ``help``: one sentence for ``--help`` and the docs; ``check``: the range check and its
    message (None values are never checked); ``negatable``: a bool flag also gets ``--no-X``;
    ``only``: the one command that has the flag (``"finetune"``); ``shown``: the default as
    text where the value alone does not say it (e.g. "the data's own split").
    """
    meta = {"flag": flag, "help": help, "check": check, "negatable": negatable, "only": only,
            "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """What to build: ``create_model(name, **kwargs)`` (the CLI adds num_classes / in_chans).

    The model arguments with a flag of their own are declared in :data:`MODEL_ARGS`; any other
    is ``--set KEY=VALUE`` (checked by the model builder).
    """

    name: str = opt("resnet20", flag="--model", help="Registry name (`resnetlab models` lists them).")
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """The data section: ``resnetlab.data.build_data(data_cfg, seed=, device=, ...)`` reads it.

    ``val_size``: None is the data's own split (5000 for Fashion-MNIST and CIFAR; 10%, at most
    5000, for folders and tables), a float in (0, 1) a fraction, an int a count.  ``augment``:
    None follows the data (the data set's recipe for images, nothing for tables).
    ``image_size``: one size or ``[height, width]``.
    """

    name: str = opt("fashion-mnist", flag="--data", help="fashion-mnist, mnist, kmnist, cifar10, cifar100, folder:PATH or csv:PATH.")
    data_dir: str | None = opt(None, flag="--data-dir", help="Where the data set's files are.", shown="the data set's usual place")
    batch_size: int = opt(128, flag="--batch-size", help="Training batch size.", check=COUNT)
    eval_batch_size: int = opt(512, flag="--eval-batch-size", help="Evaluation batch size.", check=COUNT)
    val_size: int | float | None = opt(
        None, flag="--val-size", shown="the data's own split",
        help="Held out for validation: a count (500) or a fraction (0.1).",
        check=Check(lambda v: (isinstance(v, int) and v >= 0) or (_finite(v) and 0 < v < 1),
                    "must be a count >= 0 or a fraction in (0, 1), e.g. 500 or 0.1"))
    train_size: int | None = opt(None, flag="--train-size", help="Stratified subset of the training split.", check=COUNT, shown="all of it")
    # issue 22 item 14: a smoke run's final test on a stratified, fixed subset of the test split
    test_size: int | None = opt(None, flag="--test-size", check=COUNT, shown="the whole test split",
                                help="Bound the final test to a stratified, fixed subset of this many images (a smoke run); recorded in results.json.")
    augment: str | None = opt(None, flag="--augment", shown="the data's own",
                              help="Image augmentation: default (the data's own: Fashion-MNIST flip, MNIST crop:2, CIFAR crop:4,flip; folders: none, digits must not be mirrored), none, or e.g. crop:2,flip,erase:0.25 (tables get none).")
    target: str | None = opt(None, flag="--target", help="Target column of csv: data.", shown="the last column")
    val_dir: str | None = opt(None, flag="--val-dir", help="Separate validation folder for folder: data.")
    image_size: int | tuple[int, int] | None = opt(None, flag="--image-size", help="Resize folder images to this size.", shown="as stored")
    # Progressive resizing: training is split into len(progressive_sizes) equal phases of
    # optimiser steps, and phase k trains on images whose longer side is resized (bilinear,
    # antialiased) to progressive_sizes[k], e.g. [20, 20, 24, 28]: early epochs cost half.
    # Validation and test always see the full size.  Empty: every step at the full size.
    # ``default``: the data's own schedule (Fashion-MNIST 20, 24, 28; others none), written
    # into the run's config.yaml as the sizes it trained at.
    progressive_sizes: list[int] | str = opt(
        factory=list, flag="--progressive-sizes",
        help="Progressive resizing: equal phases of training at these image sizes, e.g. 20,24,28 (evaluation at full size); default: the data's own (Fashion-MNIST 20,24,28); none: full size throughout.",
        check=Check(lambda v: v == "default" or isinstance(v, int) and not isinstance(v, bool) and v >= 4,
                    "must be whole pixel sizes >= 4, e.g. 20,24,28, or default"))
    on_bad_image: str = opt("error", flag="--on-bad-image", help="error or skip unreadable images.", check=_one_of("error", "skip"))
    cache_dir: str | None = opt(None, flag="--cache-dir", help="Cache decoded folder images here.")
    download: bool = opt(True, flag="--download", help="Download named data sets when missing.")
    allow_single_class: bool = opt(False, flag="--allow-single-class", negatable=False,
                                   help="Train even when the data has one class (otherwise an error).")
    task: str | None = opt(None, flag="--task", check=_one_of("classification", "regression"), shown="from the target",
                           help="csv: target is classification or regression (default: regression for a numeric target with many distinct values).")
    split_seed: int = opt(0, help="Seed of the train/val hold-out and the --train-size subset (independent of --seed).")
    num_workers: int | None = opt(None, help="Loader worker processes (null: none for < 512 files).")
    in_memory: bool | None = opt(None, help="Decode a folder into memory (null: when it fits in a quarter of RAM).")
    categorical: list[str] = opt(factory=list, help="CSV columns forced to categories.")
    encoding: str = opt("onehot", help="Categorical columns of a table: onehot or embed.")


@dataclass
class OptimConfig:
    """Optimiser.  ``sgd`` with Nesterov momentum is the paper's recipe (He et al. 2016, sec. 4.2).

    ``weight_decay`` skips norm-layer parameters and biases unless ``decay_norm_and_bias``:
    decaying a BN scale only changes the effective learning rate of the layer before it.
    """

    name: str = opt("sgd", flag="--optimizer", help="sgd or adamw.",
                    check=_one_of("sgd", "adamw", says="choose one of sgd, adamw"))
    lr: float = opt(0.1, flag="--lr", help="Peak learning rate.", check=POSITIVE)
    momentum: float = opt(0.9, flag="--momentum", help="SGD momentum.", check=UNIT_OPEN)
    nesterov: bool = opt(True, flag="--nesterov", help="Nesterov momentum.")
    weight_decay: float = opt(5e-4, flag="--weight-decay", help="L2 / decoupled weight decay.", check=NON_NEGATIVE)
    decay_norm_and_bias: bool = opt(False, flag="--decay-norm-and-bias", help="Also decay norm parameters and biases.")
    betas: tuple[float, float] = opt((0.9, 0.999), flag="--betas", help="AdamW betas, e.g. 0.9,0.999.",
                                     check=Check(UNIT_OPEN.ok, "must be two numbers in [0, 1)"))
    eps: float = opt(1e-8, flag="--eps", help="AdamW epsilon.", check=POSITIVE)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, a pure function of the optimiser step.

    name: ``onecycle`` (linear warm-up, then linear decay to ``final_lr_frac``), ``cosine``
    (warm-up, then half-cosine decay), ``step`` (warm-up, then x ``gamma`` at each milestone;
    the paper divides by 10 at 32k and 48k of 64k iterations) or ``constant`` (warm-up only).
    Warm-up is ``warmup_epochs`` (epochs, may be fractional) or ``warmup_frac`` (fraction of
    all steps), starting from ``warmup_start_frac`` x lr.  ``milestones`` are in epochs.
    """

    name: str = opt("onecycle", flag="--schedule", help="onecycle, cosine, step or constant.",
                    check=_one_of("onecycle", "cosine", "step", "constant",
                                  says="choose one of onecycle, cosine, step, constant"))
    warmup_epochs: float = opt(0.0, flag="--warmup-epochs", help="Linear warm-up length in epochs.",
                               check=Check(NON_NEGATIVE.ok, "must be a finite number of epochs >= 0"))
    warmup_frac: float = opt(0.0, flag="--warmup-frac", help="Linear warm-up as a fraction of all steps.",
                             check=Check(UNIT_OPEN.ok, "must be a fraction of all steps in [0, 1)"))
    warmup_start_frac: float = opt(0.0, flag="--warmup-start-frac", check=UNIT,
                                   help="Warm-up starts at this fraction of the peak learning rate.")
    milestones: list[float] = opt(factory=list, flag="--milestones", help="Step schedule epochs, e.g. 30,45.",
                                  check=Check(NON_NEGATIVE.ok, "must be epochs >= 0"))
    gamma: float = opt(0.1, flag="--gamma", help="Step schedule factor.", check=POSITIVE)
    final_lr_frac: float = opt(0.0, flag="--final-lr-frac", help="Final learning rate as a fraction of the peak.", check=UNIT)


@dataclass
class TrainConfig:
    """The loop: length, regularisation, precision, reproducibility, logging, checkpoints.

    ``checkpoint_every`` (optimiser steps) saves ``checkpoints/last`` inside an epoch as well as
    at its end; ``max_steps`` stops early for smoke tests; ``early_stop_metric`` is a column of
    ``metrics.csv`` (``val_top1``, ``val_top5``, ``val_loss``, ``train_loss``, ``train_top1``).
    """

    epochs: int = opt(10, flag="--epochs", help="Training epochs.", check=COUNT)
    # ``time_budget`` (seconds, or text such as "5m"): before training, a few steps are timed
    # and ``steps`` is fixed so the whole run ends inside it, never beyond ``epochs``
    # (resnetlab.run.budget); a config that already has ``steps`` (a saved config.yaml) reruns
    # that length without measuring.
    time_budget: float | str | None = opt(
        None, flag="--time-budget",
        help="Wall time for the whole run, e.g. 5m or 90s: a few steps are timed first, then the epochs are trained if they fit, else as many steps as fit (saved in config.yaml); none: no budget. --epochs alone replaces the recipe's budget.",
        check=Check(_duration_ok, "must be a duration such as 5m, 90s or 300 (seconds)"))
    max_steps: int | None = opt(None, flag="--max-steps", help="Stop after this many steps (smoke tests).", check=COUNT)
    label_smoothing: float = opt(0.0, flag="--label-smoothing", help="Label smoothing.", check=UNIT_OPEN)
    ema_decay: float | None = opt(None, flag="--ema", help="Weight EMA decay per step, e.g. 0.999.",
                                  check=Check(_in(0, 1, lo_open=True, hi_open=True), "must be in (0, 1), e.g. 0.999"))
    clip_grad_norm: float | None = opt(None, flag="--clip-grad", help="Clip the gradient norm to this.", check=POSITIVE)
    early_stop_patience: int | None = opt(None, flag="--early-stop", help="Stop after this many epochs without improvement.",
                                          check=Check(COUNT.ok, "must be at least 1 epoch"))
    early_stop_metric: str = opt("val_top1", flag="--early-stop-metric", help="Metric for early stopping and best checkpoint.",
                                 check=_one_of(*METRICS, says="must be one of " + ", ".join(METRICS)))
    max_nonfinite_steps: int = opt(10, flag="--max-nonfinite-steps", help="Stop after this many NaN/inf losses in a row.", check=COUNT)
    precision: str = opt("auto", flag="--precision", help="auto, fp32, bf16 or fp16.")
    channels_last: bool = opt(True, flag="--channels-last", help="NHWC memory layout.")
    compile: bool = opt(False, flag="--compile", help="torch.compile the model.")
    # BatchNorm statistics over the global batch of all ranks under torchrun (no-op on one)
    sync_bn: bool = opt(False, flag="--sync-bn", help="BatchNorm statistics over the global batch of all processes (data-parallel runs).")
    deterministic: bool = opt(False, flag="--deterministic", help="Deterministic algorithms (bit-exact resume).")
    device: str = opt("auto", flag="--device", help="auto, cpu, cuda, cuda:1, mps.")
    seed: int = opt(0, flag="--seed", help="Seed of the batch order, augmentation and initialisation (the train/val split is fixed).")
    log_every: int = opt(50, flag="--log-every", help="Steps between steps.csv rows.", check=Check(COUNT.ok, "must be at least 1 step"))
    checkpoint_every: int | None = opt(None, flag="--checkpoint-every", help="Steps between mid-epoch checkpoints.",
                                       check=Check(_in(0, _INF), "must be >= 0 steps (0 or null: only at epoch ends)"))
    # FreezeOut (Brock et al. 2017): from this fraction of the run's steps on, the stem and the
    # first stage stop training (their BatchNorm statistics still follow the data) and their
    # backward pass is skipped.  That stage works at full resolution: frozen, a 28 px step of
    # ResNet-20 costs 0.64x on a 2-core AVX2 CPU, which buys more steps in a time budget
    # (benchmarks/README.md, issue 25).  ``default``: the data's own (Fashion-MNIST 0.67, the
    # last of its three resize phases; others none) when a time budget cuts the run short of
    # its epochs, else none; written into config.yaml as the number or null.
    late_freeze: float | str | None = opt(
        None, flag="--late-freeze",
        help="From this fraction of the steps on, the stem and first stage stop training (their backward pass is skipped: faster steps), e.g. 0.67; default: the data's own (Fashion-MNIST 0.67) when the time budget cuts the epochs short; none: every layer trains to the end.",
        check=Check(lambda v: v == "default" or _in(0, 1, lo_open=True, hi_open=True)(v),
                    "must be a fraction of the run in (0, 1), e.g. 0.67, default or none"))
    tta: bool = opt(False, flag="--tta", help="Flip test-time augmentation in the final evaluation (only when training flips: never for a folder without --augment flip).")
    # The run's length in optimiser steps when set: the schedule ends there, not at epochs.
    steps: int | None = opt(None, help="The run's length in optimiser steps (set by --time-budget; the schedule ends there).", check=COUNT)
    budget_stop: int | None = opt(None, help="The step where a time budget's deadline stopped the run, the schedule unchanged (set by --time-budget when the machine slowed down; a length given anew clears it).", check=COUNT)
    # [step, end]: where a time budget, timing the run's last phase as it trains, moved the run's
    # end, and from which step (engine.replan.moved_end); the schedule's rest is stretched or
    # squeezed to end there, so the learning rate still decays to its end.
    budget_end: tuple[int, int] | None = opt(None, help="[step, end]: from this step on, the rest of the schedule is stretched or squeezed to end at that step (set by --time-budget from the run's own rate in its last phase; a length given anew clears it).", check=COUNT)


@dataclass
class FinetuneConfig:
    """Fine-tuning from a pretrained run or weights file (``source``; None: train from scratch).

    ``freeze``: ``none``, ``stem``, ``stages:K`` (the stem and K stages from the input) or
    ``backbone``; ``bn``: ``train`` or ``frozen`` (running statistics, no gamma/beta updates);
    ``backbone_lr_scale`` multiplies the backbone's learning rate (the head's is ``optim.lr``);
    ``unfreeze_at``: frozen stages train after this many epochs; ``bn_reestimate``: batches of
    the new data that recompute BN statistics before training (0: none).  ``source_classes``
    records the pretrained classes (filled in by the fine-tune); ``keep_head`` keeps the
    pretrained classifier even when the classes are not matched by name.
    """

    source: str | None = opt(None, flag="--from", only="finetune",
                             help="Pretrained run directory, checkpoint or weights file (.safetensors, .pth, .th).")
    freeze: str = opt("none", flag="--freeze", only="finetune",
                      help="none, stem, stages:K (stem + K stages from the input) or backbone.",
                      check=Check(lambda v: isinstance(v, str) and _FREEZE.fullmatch(v.strip()) is not None,
                                  f"choose {FREEZE_CHOICES} (K counts stages from the input)"))
    bn: str = opt("train", flag="--bn", only="finetune", help="train, or frozen (running statistics, no gamma/beta updates).",
                  check=_one_of("train", "frozen", says="choose train or frozen"))
    backbone_lr_scale: float = opt(1.0, flag="--backbone-lr-scale", only="finetune", check=NON_NEGATIVE,
                                   help="Backbone learning rate = this x --lr (the head gets --lr).")
    unfreeze_at: int | None = opt(None, flag="--unfreeze-at", only="finetune", check=Check(_in(0, _INF), "must be an epoch >= 0"),
                                  help="Frozen stages start training after this many epochs.")
    bn_reestimate: int = opt(0, flag="--bn-reestimate", only="finetune", check=Check(_in(0, _INF), "must be a number of batches >= 0"),
                             help="Recompute BN statistics on this many batches of the new data first.")
    source_classes: list[str] = opt(factory=list, help="The pretrained classes (filled in by the fine-tune).")
    # issue 22 item 5: by default the head is kept only when both sides name the same classes
    keep_head: bool = opt(False, flag="--keep-head", only="finetune", negatable=False,
                          help="Keep the pretrained classifier even when the classes are not matched by name (same count, in order). By default it is kept only when both sides name the same classes.")


@dataclass
class DistributedRecord:
    """How the run was laid out, *recorded* by the run (not a setting: ``--nproc`` or torchrun
    decide it).  ``world_size`` processes on ``nodes`` machines (``procs_per_node`` each); the
    optimiser sees ``global_batch`` = world_size x ``data.batch_size`` samples per step, so a
    run repeated on another world size is a different run.  None: not recorded (a config
    written by hand, or before resnetlab recorded it)."""

    world_size: int | None = opt(None, help="Processes that trained the run (recorded).")
    nodes: int | None = opt(None, help="Machines (torchrun agents) they ran on (recorded).")
    procs_per_node: int | None = opt(None, help="Processes on each machine (recorded).")
    global_batch: int | None = opt(None, help="Samples per optimiser step: world_size x data.batch_size (recorded).")


@dataclass
class RunConfig:
    """Everything that defines a training run; saved as ``config.yaml`` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distributed: DistributedRecord = field(default_factory=DistributedRecord)
    name: str | None = opt(None, flag="--name", help="Run directory name under --runs-dir (never overwritten).",
                           shown="<model>-<data>-<time>")
    runs_dir: str = opt("runs", flag="--runs-dir", help="Parent folder of run directories.")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists, so it is YAML/JSON-safe)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from a (partial) nested dict; missing keys keep their defaults.  Values out
        of range (a NaN learning rate, ``epochs: 0``) are a :class:`ConfigError`."""
        cfg = _build(cls, data, source)
        validate(cfg, source)
        return cfg

    def to_yaml(self, path: str | Path) -> None:
        """Write the fully resolved config (``sort_keys=False`` keeps the dataclass order)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        Path(path).write_text(text)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Read a YAML file; an empty file gives the defaults."""
        path = Path(path)
        data = _read_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...) at the top")
        return cls.from_dict(data, source=str(path))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start}); a config is "
                          "YAML text like the shipped recipes (resnetlab/recipes/default.yaml)") from None
    except OSError as err:  # a directory, no permission, an I/O error
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(err, "problem", None) or err).splitlines()[0]  # one line
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None


# ---------------------------------------------------------------------------------------------
# The option table, generated from the declarations above.

_PANELS = {"": "Run", "model": "Model", "data": "Data", "optim": "Optimiser", "schedule": "Schedule",
           "train": "Training", "finetune": "Fine-tuning"}


@dataclass(frozen=True)
class Option:
    """One run option, as declared: its config key, type, default, flag, help, panel and check."""

    key: str
    hint: Any
    default: Any
    flag: str | None = None
    help: str = ""
    check: Check | None = None
    negatable: bool = True
    only: str | None = None
    shown: str | None = None

    @property
    def panel(self) -> str:
        """The ``--help`` panel: the config section's title (``optim`` -> ``Optimiser``)."""
        return _PANELS[self.key.split(".")[0] if "." in self.key else ""]

    @property
    def param(self) -> str:
        """The Python name of the flag's parameter (``--lr`` -> ``lr``, ``--from`` -> ``from_``)."""
        name = (self.flag or "--" + self.key.rsplit(".", 1)[-1])[2:].replace("-", "_")
        return name + "_" if name in ("from", "set", "import") else name


def _arg(name: str, hint: Any, flag: str, help: str, shown: str, check: Check | None = None) -> Option:  # noqa: A002
    return Option(f"model.kwargs.{name}", hint, None, flag, help, check, shown=shown)


# Model arguments with a flag of their own (``model.kwargs.NAME``); others are ``--set NAME=V``.
MODEL_ARGS = (
    _arg("width_mult", float, "--width-mult", "Multiply stage widths.", "1", POSITIVE),
    _arg("shortcut", str, "--shortcut", "Shortcut where shapes change: A (zero-pad), B (projection), "
         "C (always projection), none.", "the model's own (A for CIFAR ResNets)"),
    _arg("zero_init_last", bool, "--zero-init-last", "Start each block as its skip (last BN scale 0).",
         "the model's own"),
    _arg("drop_rate", float, "--drop-rate", "Dropout before the classifier.", "0", UNIT_OPEN),
    _arg("drop_path_rate", float, "--drop-path", "Stochastic depth rate of the last block.", "0", UNIT_OPEN),
    _arg("in_chans", int, "--in-chans", "Input channels (folder data is converted to it).", "the data's",
         COUNT),
)


def _declared(cls: type, prefix: str) -> list[Option]:
    hints, out = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]) or "help" not in f.metadata:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out.append(Option(prefix + f.name, hints[f.name], default, **f.metadata))
    return out


def _all_options() -> dict[str, Option]:
    options = _declared(RunConfig, "") + _declared(ModelConfig, "model.") + list(MODEL_ARGS)
    # ``distributed`` is left out: a record of how the run ran (``--nproc``/torchrun), no option
    for section in ("data", "optim", "schedule", "train", "finetune"):
        options += _declared(type(getattr(RunConfig(), section)), section + ".")
    return {o.key: o for o in options}


# Every run option, in --help order.  ``FLAGS`` and ``CHECKS`` are views of it.
OPTIONS: dict[str, Option] = _all_options()
FLAGS: dict[str, str] = {k: o.flag for k, o in OPTIONS.items() if o.flag}
CHECKS: dict[str, Check] = {k: o.check for k, o in OPTIONS.items() if o.check}


def flag_for(key: str) -> str:
    """``"optim.lr"`` -> ``"--lr"``; a key without its own flag -> ``"--set optim.eps"``."""
    return FLAGS.get(key, f"--set {key}")


def _lookup(cfg: RunConfig, key: str) -> Any:
    if key.startswith("model.kwargs."):
        return cfg.model.kwargs.get(key.rsplit(".", 1)[1])
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Raise a one-line :class:`ConfigError` for the first value out of its range.

    Called once, by :meth:`RunConfig.from_dict` (so YAML files, flags and ``config_with``
    are checked before any run directory exists) and by the run API for configs built in
    Python; nothing below the run API checks again.
    """
    for key, (check, says) in CHECKS.items():
        value = _lookup(cfg, key)
        values = value if isinstance(value, (list, tuple)) else [value]
        if value is None or all(check(v) for v in values):
            continue
        shown = _show(value)
        if source == "flags":
            raise ConfigError(f"{flag_for(key)} {shown}: {says}")
        raise ConfigError(f"{source}: {key} {shown} {says} (flag {flag_for(key)})")
    for broken, says in _RULES:
        if broken(cfg):
            raise ConfigError(says if source in ("flags", "config") else f"{source}: {says}")


# Checks that involve two keys: (broken(cfg), the one-line error).
_RULES: tuple[tuple[Callable[[RunConfig], bool], str], ...] = (
    (lambda c: bool(c.schedule.warmup_epochs and c.schedule.warmup_frac),
     "schedule.warmup_epochs and schedule.warmup_frac are both set; use one (--warmup-epochs or --warmup-frac)"),
    (lambda c: list(c.schedule.milestones) != sorted(c.schedule.milestones),
     "schedule.milestones must be increasing epochs >= 0 (--milestones 30,45)"),
    (lambda c: c.optim.name == "sgd" and c.optim.nesterov and c.optim.momentum <= 0,
     "optim.nesterov needs optim.momentum > 0 (or use --no-nesterov)"),
    (lambda c: c.train.budget_end is not None and not c.train.budget_end[0] < c.train.budget_end[1],
     "train.budget_end is [step, end]: the step where the end was moved, before the new end"),
)


def default_recipe(name: str = "default") -> RunConfig:
    """A shipped recipe (``resnetlab/recipes/NAME.yaml``); ``default`` holds the effective
    defaults of ``resnetlab train``, ``compare-quick`` those of ``resnetlab compare``."""
    from importlib import resources

    return RunConfig.from_yaml(Path(str(resources.files("resnetlab") / "recipes" / f"{name}.yaml")))


def effective_default(option: Option, recipe: RunConfig | None = None) -> str:
    """The value ``resnetlab train`` uses when the flag is not given, as text."""
    value = _lookup(recipe or default_recipe(), option.key)
    if value is None or value == [] or (option.key.startswith("model.kwargs.") and value is None):
        return option.shown or "none"
    if isinstance(value, bool):
        return str(value).lower()
    return _show(value).strip("'")


def options_markdown(recipe: RunConfig | None = None) -> str:
    """The options table of the docs (markdown): flag, config key, default, what it does, check."""
    recipe = recipe or default_recipe()
    rows = ["| flag | config key | default | what it does |", "| --- | --- | --- | --- |"]
    for option in OPTIONS.values():
        flag = f"`{option.flag}`" if option.flag else f"`--set {option.key}=...`"
        rule = f" ({option.check.says})" if option.check else ""
        text = (option.help + rule).replace("|", "\\|")
        rows.append(f"| {flag} | `{option.key}` | `{effective_default(option, recipe)}` | {text} |")
    return "\n".join(rows) + "\n"


def options_page() -> str:
    """``docs/guide/options.md``: :func:`options_markdown` with its heading.  Regenerate it
    after declaring an option: ``python -m resnetlab.engine.config > docs/guide/options.md``."""
    return ("# Run options\n\nEvery option of `resnetlab train` (and of `finetune` and `compare`, "
            "which take the same flags),\ngenerated from the declarations in "
            "`src/resnetlab/engine/config.py` by\n`resnetlab.engine.config.options_markdown()`. "
            "The default is the `default` recipe's\n(`src/resnetlab/recipes/default.yaml`), what "
            "`resnetlab train` uses when the flag is not given.\nA key without a flag is set with "
            "`--set section.key=value`.\n\n" + options_markdown())


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{source}: unknown key {prefix}{key}{_did_you_mean(str(key), names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, source, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}", source)
    return cls(**kwargs)


def _did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(options)})"


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``hint``; accept lossless conversions only."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # the first type that takes the value: 500.0 -> int, 0.1 -> float
            try:
                return _coerce(value, option, key, source)
            except ConfigError:
                continue
        return _coerce(value, inner[-1], key, source)
    if hint is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        if origin is tuple and len(args) != len(value):
            raise ConfigError(f"{source}: {key} needs {len(args)} values, got {list(value)!r}")
        items = args if origin is tuple else [args[0]] * len(value)
        out = [_coerce(v, t, f"{key}[{i}]", source) for i, (v, t) in enumerate(zip(value, items, strict=True))]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(value, hint, key, source)


def _coerce_scalar(value: Any, hint: type, key: str, source: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads ``1e-3`` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    raise _type_error(key, value, hint.__name__, source)


def _type_error(key: str, value: Any, expected: str, source: str) -> ConfigError:
    """A value of the wrong type; from flags the error names the flag (``--progressive-sizes
    20.5: must be whole pixel sizes >= 4``) and what the key's range check asks for."""
    if source != "flags":
        return ConfigError(f"{source}: {key} must be {expected}, got {value!r}")
    base = key.split("[")[0]  # data.progressive_sizes[1] -> data.progressive_sizes
    says = CHECKS[base].says if base in CHECKS else f"must be {expected}"
    return ConfigError(f"{flag_for(base)} {_show(value)}: {says}")


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], source: str = "override") -> RunConfig:
    """A copy of ``cfg`` with dotted keys replaced, e.g. ``{"optim.lr": 0.05}``.

    Values are type-checked like YAML values; strings (from ``--set key=value``) are parsed as
    YAML scalars for non-string fields, so ``"0.05"``, ``"true"`` and ``"[30, 45]"`` work.
    ``model.kwargs.NAME`` sets a model argument unchecked (the model builder checks it).
    """
    data = cfg.to_dict()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[:2] == ["model", "kwargs"] and len(parts) == 3:
            data["model"]["kwargs"][parts[2]] = _parse_scalar(value)
            continue
        node, cls = data, RunConfig
        for part in parts[:-1]:
            cls = _field_type(cls, part, dotted, source)
            if not dataclasses.is_dataclass(cls):
                raise ConfigError(f"{source}: unknown key {dotted} ({part} is not a section)")
            node = node[part]
        hint = _field_type(cls, parts[-1], dotted, source)
        if dataclasses.is_dataclass(hint):
            raise ConfigError(f"{source}: {dotted} is a section; set one of its keys instead")
        node[parts[-1]] = _plain(_coerce(_parse_for(value, hint), hint, dotted, source))
    return RunConfig.from_dict(data, source=source)


def _field_type(cls: type, name: str, dotted: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ConfigError(f"{source}: unknown key {dotted}{_did_you_mean(name, list(hints))}")
    return hints[name]


def _parse_for(value: Any, hint: Any) -> Any:
    """Parse a command-line string unless the field is a string (``--set data.name=123``)."""
    if not isinstance(value, str):
        return value
    is_str = hint is str or (typing.get_origin(hint) in (Union, types.UnionType)
                             and str in typing.get_args(hint))
    if is_str:
        return None if value in ("null", "~") else value
    return _parse_scalar(value)


def _parse_scalar(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


if __name__ == "__main__":  # python -m resnetlab.engine.config > docs/guide/options.md
    print(options_page(), end="")
