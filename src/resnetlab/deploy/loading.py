"""Rebuilding a network from a checkpoint or weights file: :func:`load_model`.

The shared piece below :mod:`~resnetlab.deploy.export` and :mod:`~resnetlab.deploy.predictor`
(both load models; the predictor also uses exports), so neither imports the other in a cycle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from resnetlab.checkpoint import Checkpoint, load_checkpoint
from resnetlab.models.registry import create_model, model_info
from resnetlab.utils.errors import ConfigError

__all__ = ["LoadedModel", "load_model"]


@dataclass
class LoadedModel:
    """A network rebuilt from a checkpoint, with what is needed to feed it."""

    model: nn.Module
    build_args: dict[str, Any]      # create_model(name, **kwargs), as stored in the checkpoint
    classes: list[str]
    data_meta: dict[str, Any] | None  # the data layer's preprocessing meta (None: bare weights)
    meta: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @property
    def input_kind(self) -> str:
        return str(model_info(self.build_args["name"]).get("input_kind", "image"))

    @property
    def in_channels(self) -> int:
        """Channels (images) or features (vectors) the first layer expects."""
        args = self.build_args
        found = args.get("in_chans", args.get("in_features"))
        if found is None:  # built with the default: read it off the first layer's weight
            found = int(self.model.state_dict()[_first_weight_key(self.model)].shape[1])
        return found


def _input_key(name: str) -> str:
    return "in_features" if model_info(name).get("input_kind") == "vector" else "in_chans"


def _first_weight_key(model: nn.Module) -> str:
    """The first >= 2-D weight in forward-definition order: the stem conv or input linear."""
    return next(k for k, v in model.state_dict().items() if v.ndim >= 2)


def _classifier_key(model: nn.Module) -> str | None:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if head is None:
        return None
    return next((f"{n}.weight" for n, m in model.named_modules() if m is head), None)


def _infer_build_args(ckpt: Checkpoint, name: str, num_classes: int | None,
                      in_channels: int | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``create_model`` arguments for bare weights: flags win, else shapes read off the file."""
    key = _input_key(name)
    probe = create_model(name, **{**kwargs, "num_classes": num_classes or 1})
    if num_classes is None:
        head = _classifier_key(probe)
        if head is None or head not in ckpt.model_state:
            raise ConfigError(f"{ckpt.path}: cannot tell the number of classes; pass --num-classes")
        num_classes = int(ckpt.model_state[head].shape[0])
    if in_channels is None:
        first = _first_weight_key(probe)
        if first not in ckpt.model_state:
            raise ConfigError(f"{ckpt.path}: cannot tell the input channels; pass --in-chans")
        in_channels = int(ckpt.model_state[first].shape[1])
    return {"name": name, **kwargs, "num_classes": num_classes, key: in_channels}


def load_model(source: str | os.PathLike, *, model: str | None = None,
               num_classes: int | None = None, in_chans: int | None = None,
               model_kwargs: dict[str, Any] | None = None) -> LoadedModel:
    """Rebuild the network stored at ``source`` and load its weights (in eval mode, on the CPU).

    ``source`` is a run directory (its ``best`` checkpoint, else ``last``), a checkpoint
    directory, or a weights file (``.safetensors``; ``.pt/.pth`` only through
    ``torch.load(weights_only=True)``).  A resnetlab checkpoint names its own model; bare
    weights need ``model`` (a registry name) and, when they were built with non-default
    arguments, ``model_kwargs`` (e.g. ``{"width_mult": 0.5}``).  ``num_classes`` and
    ``in_chans`` (channels, or features for vector models) are read off the weights when not
    given.
    """
    ckpt = load_checkpoint(source, train_state=False)
    stored = ckpt.meta.get("model")
    if stored and (model and model != stored.get("name") or model_kwargs):
        flag = f"--model {model}" if model and model != stored.get("name") else "--set"
        raise ConfigError(f"{source} holds a {stored.get('name')} checkpoint that names its own "
                          f"architecture; drop {flag}")
    if stored:
        args = dict(stored)
    elif model:
        args = _infer_build_args(ckpt, model, num_classes, in_chans, dict(model_kwargs or {}))
    else:
        raise ConfigError(f"{source}: bare weights do not name their architecture; pass --model "
                          "NAME (and --num-classes/--in-chans if they cannot be read off the weights)")
    kwargs = {k: v for k, v in args.items() if k != "name"}
    net = create_model(args["name"], **kwargs)
    ckpt.load_into(net)
    classes = [str(c) for c in ckpt.meta.get("classes") or range(kwargs.get("num_classes", 0))]
    return LoadedModel(net.eval(), args, classes, ckpt.meta.get("data"), ckpt.meta, ckpt.path)
