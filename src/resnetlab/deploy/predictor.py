"""Prediction from a trained network: rebuild it from a checkpoint (or open an ONNX export),
preprocess raw inputs exactly as training did, and return top-k classes with probabilities.

The network behind a :class:`Predictor` is a *backend*: any callable that maps a float32 CPU
batch to logits.  :class:`TorchBackend` runs a PyTorch module (:func:`torch_backend`: with BN
folded, channels_last, inference mode); :class:`resnetlab.deploy.onnx.OnnxBackend` runs an ONNX
file in onnxruntime.  Preprocessing, streaming, bad-image handling and top-k are shared, so both
runtimes give the same answers.  :func:`load_model` is the one place a run's checkpoint is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from resnetlab.deploy.export import auto_export, check_onnx_file, export_status
from resnetlab.deploy.loading import LoadedModel, load_model
from resnetlab.engine.task import task_of
from resnetlab.models.registry import model_info
from resnetlab.utils import autocast, resolve_device, resolve_dtype
from resnetlab.utils.errors import ConfigError, DataError

__all__ = [
    "Backend", "TorchBackend", "BACKENDS", "RUNTIMES", "LoadedModel", "load_model", "Prediction",
    "Predictor", "load_predictor", "torch_backend", "list_inputs",
]


class Backend(Protocol):
    """Maps a float32 batch (on the CPU) to float32 logits (on the CPU), shape ``(N, K)``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


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


def torch_backend(loaded: LoadedModel, device: str = "auto", precision: str = "fp32") -> Backend:
    """resnetlab's optimised PyTorch path: BN folded into the convs, channels_last, inference
    mode (each measured in ``benchmarks/infer.py``)."""
    from resnetlab.layers.fold import fold_bn

    return TorchBackend(fold_bn(loaded.model), device, precision)


# Backend factories by name: (LoadedModel, device, precision) -> Backend.
BACKENDS: dict[str, Callable[[LoadedModel, str, str], Backend]] = {"torch": torch_backend}


@dataclass
class Prediction:
    """Top-k classes of one input, most probable first."""

    input: str
    classes: list[str]
    indices: list[int]
    probs: list[float]
    value: float | None = None  # a regression table: the prediction in target units

    def to_dict(self) -> dict[str, Any]:
        if self.value is not None:
            return {"input": self.input, "target": self.classes[0], "value": self.value}
        return {"input": self.input, "topk": [
            {"class": c, "index": i, "prob": p}
            for c, i, p in zip(self.classes, self.indices, self.probs, strict=True)]}


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")


class Predictor:
    """Top-k prediction for raw inputs (image files/folders, or CSV rows for table models).

    ``data_meta`` is the data layer's meta saved with the run (or a preset); it makes new inputs
    go through exactly the training preprocessing (channels, size, mean/std, CSV statistics).
    Inputs stream through in batches of ``batch_size`` files, so memory does not grow with their
    number.  ``on_bad_image="skip"`` leaves unreadable images out and lists them in ``skipped``.
    ``notices`` collects what the user should be told once (defaults used, conversions).
    """

    def __init__(self, backend: Backend, classes: Sequence[str], data_meta: dict[str, Any] | None,
                 batch_size: int = 256, on_bad_image: str = "error",
                 notices: list[str] | None = None, runtime: str = "torch"):
        _check_batch_size(batch_size)
        if on_bad_image not in ("error", "skip"):
            raise ConfigError(f"--on-bad-image {on_bad_image!r}: choose error or skip")
        self.backend, self.classes, self.data_meta = backend, list(classes), data_meta
        # what the outputs mean (logits or a standardised target), as in training
        self.task = task_of(data_meta or {}, len(self.classes), self.classes)
        self.batch_size, self.on_bad_image, self.runtime = batch_size, on_bad_image, runtime
        self.notices: list[str] = list(notices or [])
        self.skipped: list[str] = []
        self._converted = False

    @classmethod
    def from_path(cls, path: str | os.PathLike, **kwargs: Any) -> Predictor:
        """A predictor for a run directory, checkpoint, weights file or ``.onnx`` export
        (keyword arguments as :func:`load_predictor`)."""
        return load_predictor(path, **kwargs)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw backend outputs (logits, or standardised regression values), float32, computed
        ``batch_size`` rows at a time."""
        if len(x) == 0:
            return torch.empty(0, len(self.classes))
        return torch.cat([self.backend(part) for part in x.split(self.batch_size)]).float()

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(N, K)`` (float32), computed ``batch_size`` rows at a time."""
        return self.outputs(x).softmax(dim=1)

    def topk(self, x: torch.Tensor, labels: Sequence[str], k: int = 5) -> list[Prediction]:
        """Top-``k`` (at most the number of classes) for a preprocessed batch."""
        if k < 1:
            raise ConfigError(f"--top-k {k}: must be at least 1")
        return self.predictions(self.outputs(x), labels, k)

    def predictions(self, outputs: torch.Tensor, labels: Sequence[str], k: int = 5
                    ) -> list[Prediction]:
        """Top-``k`` from :meth:`outputs` (a regression table: values in target units)."""
        if self.task.regression:
            return self._values(outputs, labels)
        probs = outputs.softmax(dim=1)
        values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
        return [Prediction(label, [self._name(i) for i in idx.tolist()], idx.tolist(), val.tolist())
                for label, val, idx in zip(labels, values, indices, strict=True)]

    def _values(self, z: torch.Tensor, labels: Sequence[str]) -> list[Prediction]:
        """A regression table: outputs mapped from the standardised scale to target units."""
        target = self.data_meta["table"]["target"]
        return [Prediction(label, [target], [0], [1.0], value=self.task.to_units(v))
                for label, v in zip(labels, z.reshape(-1).tolist(), strict=True)]

    def preprocess_images(self, sources: Sequence[str | os.PathLike | bytes],
                          names: Sequence[str] | None = None,
                          max_pixels: int | None = None) -> torch.Tensor:
        """Image files or their bytes -> the network's input batch: the one image
        preprocessing of ``predict`` and ``serve``.  With ``resize_short`` (the ImageNet
        preset) the short side is resized to it and the centre ``image_size`` cropped, as
        torchvision's reference eval (resize 256, crop 224) does.  Normalisation is per
        channel, so cropping after it is exact."""
        from resnetlab.data import decode_images

        short = self.data_meta.get("resize_short")
        if not short:
            return decode_images(sources, self.data_meta, names=names, max_pixels=max_pixels)
        # covering a short x short square scales the image's short side to exactly ``short``
        x = decode_images(sources, {**self.data_meta, "image_size": [short, short]},
                          names=names, max_pixels=max_pixels)
        (h, w), (sh, sw) = self.data_meta["image_size"], x.shape[-2:]
        top, left = round((sh - h) / 2), round((sw - w) / 2)
        return x[..., top:top + h, left:left + w].contiguous()

    def preprocess_records(self, records: Sequence[Any], name: str = "request") -> torch.Tensor:
        """JSON rows of a table model -> its input batch, through the training schema (the
        same :func:`resnetlab.data.table_features` as CSV files)."""
        from resnetlab.data import records_table, table_features

        return table_features(records_table(records, self.data_meta, name), self.data_meta)

    def predict(self, inputs: Sequence[str | os.PathLike], k: int = 5) -> list[Prediction]:
        """Top-``k`` for files and folders (searched recursively), preprocessed like training."""
        return list(self.iter_predict(inputs, k))

    def iter_predict(self, inputs: Sequence[str | os.PathLike], k: int = 5
                     ) -> Iterator[Prediction]:
        """Like :meth:`predict`, but yields each batch's predictions as soon as it is computed."""
        if k < 1:
            raise ConfigError(f"--top-k {k}: must be at least 1")
        if self.data_meta is None:
            raise ConfigError("these weights carry no preprocessing; pass --data NAME (the data "
                              "set they were trained on) so inputs are normalised the same way")
        self.skipped = []
        files = list_inputs(inputs, self.data_meta)
        for start in range(0, len(files), self.batch_size):
            x, labels = self._preprocess(files[start:start + self.batch_size])
            if len(labels):
                yield from self.topk(x, labels, k)

    def _preprocess(self, files: list[Path]) -> tuple[torch.Tensor, list[str]]:
        """One batch through the data layer's preprocessing; bad files named or skipped."""
        self._note_conversion(files)
        try:
            return self._decode(files)
        except DataError:
            if self.data_meta.get("kind") != "image":
                raise
        parts, labels = [], []
        for f in files:  # rare path: find which file is unreadable
            try:
                x, names = self._decode([f])
            except DataError as err:
                if self.on_bad_image != "skip":
                    raise DataError(f"{err}; or pass --on-bad-image skip") from None
                self.skipped.append(str(f))
                continue
            parts.append(x)
            labels += names
        return (torch.cat(parts) if parts else torch.empty(0)), labels

    def _decode(self, files: list[Path]) -> tuple[torch.Tensor, list[str]]:
        from resnetlab.data import preprocess_inputs

        if self.data_meta.get("kind") == "image":
            return self.preprocess_images(files), [str(f) for f in files]
        return preprocess_inputs(files, self.data_meta)

    def _note_conversion(self, files: list[Path]) -> None:
        """State once that images are converted to the network's channel count."""
        want = self.data_meta.get("in_chans")
        if self._converted or self.data_meta.get("kind") != "image" or want not in (1, 3):
            return
        for f in files:
            got = image_channels(f)
            if got is not None and got != want:
                self._converted = True
                self.notices.append(f"{f} and other images with {got} channel(s) are converted "
                                    f"to {want} ({'grey' if want == 1 else 'RGB'}), as in training")
                return

    def _name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else str(index)


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


def list_inputs(inputs: Sequence[str | os.PathLike], meta: dict[str, Any]) -> list[Path]:
    """Files as given, folders expanded (recursively, sorted, hidden files left out)."""
    from resnetlab.data.inputs import expand_inputs

    suffixes = _TABLE_SUFFIXES if meta.get("kind") == "table" else _IMAGE_SUFFIXES
    return expand_inputs(inputs, suffixes)


def image_channels(path: Path) -> int | None:
    """1 (grey) or 3 (colour), by the folder probe's rule; None when unreadable."""
    from PIL import Image

    from resnetlab.data.readers.image import is_grey

    try:
        with Image.open(path) as img:
            return 1 if is_grey(img) else 3  # the rule folders are probed with
    except Exception:  # reported with its path when decoded
        return None


RUNTIMES = ("auto", "torch", "onnx")


def load_predictor(source: str | os.PathLike, *, runtime: str = "auto", device: str = "auto",
                   precision: str = "fp32", model: str | None = None,
                   num_classes: int | None = None, in_chans: int | None = None,
                   model_kwargs: dict[str, Any] | None = None,
                   data_meta: dict[str, Any] | None = None, batch_size: int = 256,
                   on_bad_image: str = "error", int8: bool | None = None) -> Predictor:
    """A :class:`Predictor` for a run directory, checkpoint, weights file or ``.onnx`` file.

    ``runtime``: ``onnx`` (onnxruntime; an ``.onnx`` file, or a run's verified export),
    ``torch`` (resnetlab's optimised PyTorch path) or ``auto``: the fastest verified path
    available: a run's int8 or fp32 ONNX export verified for its current checkpoint; when a run
    directory has none and onnxruntime is installed, one fp32 export is made (verified, atomic,
    said in ``notices``) and reused by later calls; else torch (also on a GPU device, and when
    the run directory is read-only, with a notice).  ``data_meta`` overrides (or, for bare weights,
    supplies) the preprocessing; bare weights without it get their family's preset.
    ``int8``: None takes the fastest verified export (int8 when one was kept), False the fp32
    one only, True requires the run's kept int8 export.
    """
    _check_batch_size(batch_size)
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    path = Path(source)
    if path.suffix.lower() == ".onnx":
        if runtime == "torch":
            raise ConfigError(f"{source}: an .onnx file runs through onnxruntime; drop "
                              "--runtime torch, or give the run directory")
        unverified = check_onnx_file(path)
        predictor = _onnx_predictor(path, data_meta, batch_size, on_bad_image)
        predictor.notices[:0] = [unverified] if unverified else []
        return predictor
    notices: list[str] = []
    # onnxruntime runs here on the CPU: on a GPU device, auto means torch there
    if not model and (runtime == "onnx" or runtime == "auto" and resolve_device(device).type == "cpu"):
        export, notices = _fastest_export(path, runtime, int8)
        if export is not None:
            predictor = _onnx_predictor(export, data_meta, batch_size, on_bad_image)
            predictor.notices[:0] = notices
            return predictor
    loaded = load_model(source, model=model, num_classes=num_classes, in_chans=in_chans,
                        model_kwargs=model_kwargs)
    meta, classes, more = _preprocessing(loaded, data_meta, str(source))
    notices += more
    return Predictor(BACKENDS["torch"](loaded, device, precision), classes, meta, batch_size,
                     on_bad_image, notices, runtime="torch")


def _fastest_export(path: Path, runtime: str, int8: bool | None = None
                    ) -> tuple[Path | None, list[str]]:
    """The run's verified ONNX export for its current checkpoint, made once when missing
    (onnxruntime fp32 is ~1.4x resnetlab's torch path on CPUs: ``benchmarks/infer.py``)."""
    export, distrust = export_status(path, int8)
    if export is not None:
        return export, []
    if int8:
        why = f" ({distrust.removesuffix('; re-exporting')})" if distrust else ""
        raise ConfigError(f"{path}: no verified int8 export of its current checkpoint{why}; run "
                          f"`resnetlab export {path} --format onnx --int8` first")
    export, notices = auto_export(path) if path.is_dir() else (None, [])
    notices[:0] = [distrust] if distrust else []
    if export is None and runtime == "onnx":
        raise ConfigError(f"{path}: no verified ONNX export of its current checkpoint; run "
                          f"`resnetlab export {path} --format onnx` or use --runtime torch")
    return export, notices


def _preprocessing(loaded: LoadedModel, data_meta: dict[str, Any] | None, source: str
                   ) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """(data meta, class names, notices): the run's own, the user's ``--data``, or a preset."""
    from resnetlab.deploy.presets import check_meta_fits, preset_for_family

    name, notices = loaded.build_args["name"], []
    num_classes = loaded.build_args.get("num_classes")
    meta = data_meta if data_meta is not None else loaded.data_meta
    if data_meta is not None:
        check_meta_fits(data_meta, loaded.in_channels, num_classes, f"{source} ({name})")
    elif meta is None and loaded.input_kind == "image":
        meta = preset_for_family(model_info(name).get("family"), loaded.in_channels, num_classes)
        if meta is not None:
            notices.append(f"{source}: bare weights carry no preprocessing; using the "
                           f"{meta['preset']} preset ({_describe(meta)}); pass --data NAME to "
                           "use a data set's own")
    classes = loaded.classes
    if not loaded.meta.get("classes") and meta is not None and meta.get("classes"):
        classes = [str(c) for c in meta["classes"]]
    return meta, classes, notices


def _describe(meta: dict[str, Any]) -> str:
    h, w = meta["image_size"]
    mean = ", ".join(f"{v:.3f}" for v in meta["mean"])
    std = ", ".join(f"{v:.3f}" for v in meta["std"])
    size = f"short side {meta['resize_short']}, centre crop {h}x{w}" if meta.get("resize_short") \
        else f"{h}x{w}"
    return f"{size}, {meta['in_chans']} channel(s), mean {mean}, std {std}"


def _onnx_predictor(path: Path, data_meta: dict[str, Any] | None, batch_size: int,
                    on_bad_image: str) -> Predictor:
    """onnxruntime over a resnetlab export (its own metadata) or a foreign static-shape model."""
    from resnetlab.deploy.onnx import OnnxBackend, onnx_input_shape

    backend = OnnxBackend(path)
    stored, notices = backend.meta, []
    if stored and stored.get("data"):
        meta = data_meta if data_meta is not None else stored["data"]
        classes = stored.get("classes") or meta.get("classes") or []
    else:
        shape = onnx_input_shape(backend.session)
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
            raise ConfigError(f"{path}: not a resnetlab export, and its input shape {shape} is "
                              "not a static (N, C, H, W); export it with a fixed image size")
        meta = data_meta if data_meta is not None else _default_meta(shape[1], shape[2:])
        classes = list(meta.get("classes") or [])
        if data_meta is None:
            notices.append(f"{path}: no resnetlab preprocessing metadata found; using defaults "
                           f"({_describe(meta)})")
    return Predictor(backend, [str(c) for c in classes], meta, batch_size, on_bad_image,
                     notices, runtime="onnx")


def _default_meta(chans: int, size: list[int]) -> dict[str, Any]:
    """Defaults for a foreign model: ImageNet statistics for colour, 0.5/0.5 for grey."""
    from resnetlab.deploy.presets import PRESETS

    rgb = chans == 3
    return {"kind": "image", "name": "defaults", "in_chans": chans, "image_size": list(size),
            "mean": PRESETS["imagenet"]["mean"] if rgb else [0.5] * chans,
            "std": PRESETS["imagenet"]["std"] if rgb else [0.5] * chans, "classes": []}
