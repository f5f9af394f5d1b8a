"""Prediction from a trained network: rebuild it from a checkpoint, preprocess raw inputs exactly
as training did, and return top-k classes with probabilities.

The network behind a :class:`Predictor` is a *backend*: any callable that maps a float32 CPU
batch to logits.  :class:`TorchBackend` runs the PyTorch module; an ONNX Runtime backend only has
to implement the same ``__call__`` (and register itself in :data:`BACKENDS`), so the CLI, the
preprocessing and the top-k logic are shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from resnetlab.checkpoint import Checkpoint, load_checkpoint
from resnetlab.registry import create_model, model_info
from resnetlab.utils import autocast, resolve_device, resolve_dtype
from resnetlab.utils.errors import ConfigError, DataError

__all__ = [
    "Backend", "TorchBackend", "BACKENDS", "LoadedModel", "load_model", "Prediction",
    "Predictor", "load_predictor",
]


class Backend(Protocol):
    """Maps a float32 batch (on the CPU) to float32 logits (on the CPU), shape ``(N, K)``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


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
    def in_channels(self) -> int | None:
        """Channels (images) or features (vectors) the first layer expects."""
        args = self.build_args
        return args.get("in_chans", args.get("in_features"))


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


class TorchBackend:
    """Runs a PyTorch module under inference mode on ``device`` with the one autocast context."""

    def __init__(self, model: nn.Module, device: str | torch.device = "auto",
                 precision: str = "fp32", channels_last: bool = True):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype = resolve_dtype(precision, self.device)
        self.model = model.eval().to(self.device)
        # NHWC convolutions are what oneDNN/cuDNN run fastest (ignored by non-4-D models).
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.dtype):
            logits = self.model(x)
        return logits.float().cpu()


# Backend factories by name: (LoadedModel, device, precision) -> Backend.
BACKENDS: dict[str, Callable[[LoadedModel, str, str], Backend]] = {
    "torch": lambda loaded, device, precision: TorchBackend(loaded.model, device, precision),
}


@dataclass
class Prediction:
    """Top-k classes of one input, most probable first."""

    input: str
    classes: list[str]
    indices: list[int]
    probs: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "topk": [
            {"class": c, "index": i, "prob": p}
            for c, i, p in zip(self.classes, self.indices, self.probs, strict=True)]}


class Predictor:
    """Top-k prediction for raw inputs (image files/folders, or CSV rows for table models).

    ``data_meta`` is the data layer's meta saved with the run; it makes new inputs go through
    exactly the training preprocessing (channels, size, mean/std, CSV statistics).
    """

    def __init__(self, backend: Backend, classes: Sequence[str], data_meta: dict[str, Any] | None,
                 batch_size: int = 256):
        self.backend = backend
        self.classes = list(classes)
        self.data_meta = data_meta
        self.batch_size = batch_size

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(N, K)`` (float32), computed ``batch_size`` rows at a time."""
        if len(x) == 0:
            return torch.empty(0, len(self.classes))
        chunks = [self.backend(part) for part in x.split(self.batch_size)]
        return torch.cat(chunks).softmax(dim=1)

    def topk(self, x: torch.Tensor, labels: Sequence[str], k: int = 5) -> list[Prediction]:
        """Top-``k`` (at most the number of classes) for a preprocessed batch."""
        if k < 1:
            raise ConfigError(f"--top-k {k}: must be at least 1")
        probs = self.probabilities(x)
        values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
        return [Prediction(label, [self._name(i) for i in idx.tolist()], idx.tolist(), val.tolist())
                for label, val, idx in zip(labels, values, indices, strict=True)]

    def predict(self, inputs: Sequence[str | os.PathLike], k: int = 5) -> list[Prediction]:
        """Top-``k`` for files and folders (searched recursively), preprocessed like training."""
        from resnetlab.data import preprocess_inputs

        if self.data_meta is None:
            raise ConfigError("these weights carry no preprocessing; pass --data NAME (the data "
                              "set they were trained on) so inputs are normalised the same way")
        x, labels = preprocess_inputs([Path(p) for p in inputs], self.data_meta)
        if len(x) == 0:
            raise DataError(f"no inputs found in {', '.join(map(str, inputs))}")
        return self.topk(x, labels, k)

    def _name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else str(index)


def load_predictor(source: str | os.PathLike, *, backend: str = "torch", device: str = "auto",
                   precision: str = "fp32", model: str | None = None,
                   num_classes: int | None = None, in_chans: int | None = None,
                   model_kwargs: dict[str, Any] | None = None,
                   data_meta: dict[str, Any] | None = None, batch_size: int = 256) -> Predictor:
    """A :class:`Predictor` for a run directory, checkpoint or weights file (see :func:`load_model`).

    ``data_meta`` overrides (or, for bare weights, supplies) the preprocessing meta.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    loaded = load_model(source, model=model, num_classes=num_classes, in_chans=in_chans,
                        model_kwargs=model_kwargs)
    meta = data_meta if data_meta is not None else loaded.data_meta
    classes = loaded.classes
    if data_meta is not None and not loaded.meta.get("classes") and data_meta.get("classes"):
        classes = [str(c) for c in data_meta["classes"]]
    return Predictor(BACKENDS[backend](loaded, device, precision), classes, meta, batch_size)
