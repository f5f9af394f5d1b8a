"""From a config to data and a network that fits it (what every run and evaluation builds first)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from resnetlab.data import DATASETS, build_data
from resnetlab.engine.config import DataConfig, RunConfig
from resnetlab.engine.plan import late_freeze_problem
from resnetlab.models.mlp import table_defaults
from resnetlab.models.registry import create_model, model_info
from resnetlab.utils.errors import ConfigError, DataError, UserError
from resnetlab.utils.seed import seed_everything

__all__ = ["make_data", "build_model", "build_data_and_model", "input_size", "check_input_fits",
           "flip_tta_applies", "as_built", "late_freeze_if_short"]


def make_data(data_cfg: DataConfig, *, seed: int, device: torch.device, channels_last: bool,
              in_chans: int | None) -> Any:
    """``build_data`` for the data section of a config."""
    return build_data(data_cfg, seed=seed, device=device, channels_last=channels_last,
                      in_chans=in_chans)


def input_size(input_kind: str, shape: Sequence[int]) -> int:
    """What a model reads from data of ``shape``: channels (images) or features (vectors;
    images are flattened, so an MLP-ResNet on 1x28x28 reads 784)."""
    return math.prod(shape) if input_kind == "vector" else int(shape[0])


def check_input_fits(model_name: str, input_kind: str, model_in: int | None,
                     bundle: Any, data_name: str) -> None:
    """One-line errors for a network that cannot read the data (tables vs images, channels)."""
    shape = tuple(bundle.input_shape)
    if input_kind == "image" and len(shape) != 3:
        raise UserError(f"--model {model_name} reads images but --data {data_name} is a table "
                        f"of {shape[0]} features; use a vector model such as mlp_resnet")
    need = input_size(input_kind, shape)
    if model_in is not None and model_in != need:
        unit = "features" if input_kind == "vector" else "channels"
        raise UserError(f"--model {model_name} expects {model_in} input {unit} but --data "
                        f"{data_name} gives {need} (shape {shape}); use data with {model_in} {unit}")


def build_model(cfg: RunConfig, bundle: Any) -> nn.Module:
    """``create_model`` with the data's class count and input channels (or features)."""
    kind = model_info(cfg.model.name).get("input_kind", "image")
    key = "in_features" if kind == "vector" else "in_chans"
    kwargs = dict(cfg.model.kwargs)
    check_input_fits(cfg.model.name, kind, kwargs.get(key), bundle, cfg.data.name)
    if kind == "vector" and cfg.data.progressive_sizes not in ([], "default"):
        raise ConfigError(f"--progressive-sizes: --model {cfg.model.name} reads flattened vectors "
                          "of one fixed size; use a convolutional model or drop the flag")
    given = kwargs.get("num_classes")
    if given is not None and given != bundle.num_classes:
        raise ConfigError(f"--set num_classes={given}: --data {cfg.data.name} has "
                          f"{bundle.num_classes} classes; drop num_classes")
    kwargs.update({key: input_size(kind, bundle.input_shape), "num_classes": bundle.num_classes})
    if kind == "vector" and "table" in bundle.meta:
        kwargs.update(table_model_args(cfg.model.name, kwargs, bundle.meta))
    return create_model(cfg.model.name, **kwargs)


# the MLP-ResNet arguments that size the network; naming any of them turns table sizing off
_SIZING = ("width", "bottleneck_width", "width_mult", "num_blocks", "drop_rate")


def table_model_args(name: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """For a vector model on a table: embeddings for ``encoding="embed"`` columns, and (for
    the MLP-ResNets, unless sized by the user) a width and dropout for the table's size."""
    out: dict[str, Any] = {}
    embed = meta["table"].get("embed_columns") or []
    if embed and "embed_columns" not in kwargs:
        out["embed_columns"] = [[c["index"], c["cardinality"]] for c in embed]
    if name in ("mlp_resnet", "plain_mlp") and not any(k in kwargs for k in _SIZING):
        out.update(table_defaults(int(meta["split"].get("train") or 0)))
    return out


def build_data_and_model(cfg: RunConfig, device: torch.device) -> tuple[Any, nn.Module]:
    """The data bundle of ``cfg.data`` and a freshly initialised network that fits it."""
    bundle = make_data(cfg.data, seed=cfg.train.seed, device=device,
                       channels_last=cfg.train.channels_last,
                       in_chans=cfg.model.kwargs.get("in_chans"))
    seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
    model = build_model(cfg, bundle)
    check_batch_norm_batches(model, bundle, cfg.data.name)
    return bundle, model


def check_batch_norm_batches(model: nn.Module, bundle: Any, data: str) -> None:
    """BatchNorm cannot normalise a training batch of one sample (torch raises mid-step): say
    so before training, naming the data or the flag."""
    train = bundle.train
    if train is None or getattr(train, "batch_size", 2) > 1 or not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    if train.num_samples <= 1:
        rows = "row" if bundle.meta.get("kind") == "table" else "image"
        raise DataError(f"{data.removeprefix('csv:').removeprefix('folder:')}: "
                        f"{train.num_samples} training {rows} after the validation hold-out; "
                        f"BatchNorm needs at least 2 per batch: add {rows}s")
    raise ConfigError("--batch-size 1: BatchNorm needs at least 2 samples per training batch; "
                      "use --batch-size 2 or more")


def flip_tta_applies(cfg: RunConfig, bundle: Any) -> bool:
    """Flip test-time augmentation averages an image and its mirror: only meaningful for a
    network trained on mirrored images.  So ``train.tta`` applies only when the training
    augmentation flips (Fashion-MNIST and CIFAR by default; a folder only with ``--augment
    flip``: digits and text must not be mirrored)."""
    return (cfg.train.tta and len(bundle.input_shape) == 3
            and "flip" in str(bundle.meta.get("augment", "")).split(","))


def as_built(cfg: RunConfig, bundle: Any) -> RunConfig:
    """``cfg`` with ``data.augment``, ``data.progressive_sizes``, ``train.late_freeze`` and
    ``train.tta`` as the data really gets them, so the run's config.yaml says what happened
    (``default`` becomes e.g. ``flip`` and ``[20, 24, 28]``, or ``none`` and ``[]``; the late
    freeze null until a time budget sets it) and ``--config RUN/config.yaml`` repeats it.  Tables keep their augmentation (they are never augmented)."""
    out = copy.deepcopy(cfg)
    if out.data.progressive_sizes == "default":  # an MLP reads images of one fixed size
        image_model = model_info(cfg.model.name).get("input_kind", "image") == "image"
        out.data.progressive_sizes = own_progressive_sizes(cfg.data.name, bundle) if image_model else []
    if out.train.late_freeze == "default":  # a time budget may still set the data's own
        out.train.late_freeze = None         # (late_freeze_if_short, resnetlab.run.budget)
    if bundle.meta.get("kind") == "image" and "augment" in bundle.meta:
        out.data.augment, out.train.tta = str(bundle.meta["augment"]), flip_tta_applies(cfg, bundle)
    return out


def late_freeze_if_short(cfg: RunConfig, bundle: Any, model: Any) -> float | None:
    """The late freeze a time budget adopts when it cuts the run short of its epochs
    (``train.late_freeze: default``): the data's own, for a network that can freeze (not the
    MLP-ResNet); None otherwise.  When every epoch fits, every layer trains to the end: on a
    CPU with native bf16 the freeze saved 15% of a 6-epoch run and cost 0.24 points
    (benchmarks/README.md, issue 25)."""
    if cfg.train.late_freeze != "default" or late_freeze_problem(model):
        return None
    return own_late_freeze(cfg.data.name, bundle)


def own_late_freeze(data_name: str, bundle: Any) -> float | None:
    """A named image data set's own ``train.late_freeze`` (``default``); none for folders and
    tables."""
    if bundle.meta.get("kind") != "image" or data_name not in DATASETS:
        return None
    return DATASETS[data_name].late_freeze


def own_progressive_sizes(data_name: str, bundle: Any) -> list[int]:
    """The input sizes of a data set's own progressive-resizing schedule (``default``): a named
    set's, when its images kept their stored size; none for folders, tables and resized sets."""
    if bundle.meta.get("kind") != "image" or data_name not in DATASETS:
        return []
    sizes = list(DATASETS[data_name].progressive)
    return sizes if sizes and max(bundle.input_shape[1:]) == sizes[-1] else []
