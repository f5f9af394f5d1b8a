"""``build_data``: the data section of a run config -> train/val/test loaders and the metadata
that lets prediction preprocess new inputs exactly like training did.  This module checks the
options and dispatches on the kind of data; :mod:`.named`, :mod:`.folders` and :mod:`.tables`
do the work."""

from __future__ import annotations

from typing import Any

import torch

from resnetlab.data.bundle import DataBundle, RunSide
from resnetlab.data.folders import build_folder
from resnetlab.data.named import build_named
from resnetlab.data.tables import ENCODINGS, build_table
from resnetlab.utils.errors import ConfigError

__all__ = ["DataBundle", "build_data", "data_kind"]

_AUTO = (None, "auto", "default")  # augment values that mean "what this data wants"


def data_kind(name: str) -> str:
    """``"named"``, ``"folder"`` or ``"csv"`` for a ``--data`` value."""
    kind = name.split(":", 1)[0] if ":" in name else "named"
    if kind not in ("named", "folder", "csv"):
        raise ConfigError(f"--data {name}: prefix {kind + ':'!r} is unknown; use folder:PATH, "
                          "csv:PATH or a name such as fashion-mnist")
    return kind


def _image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"--image-size {value}: give one size or (height, width), each >= 1")
    return size  # type: ignore[return-value]


def _check(data_cfg: Any, kind: str, in_chans: int | None) -> None:
    """One-line errors for bad values and for options this kind of data would ignore."""
    if data_cfg.on_bad_image not in ("error", "skip"):
        raise ConfigError(f"--on-bad-image {data_cfg.on_bad_image!r}: choose error or skip")
    if data_cfg.encoding not in ENCODINGS:
        raise ConfigError(f"--set data.encoding={data_cfg.encoding}: choose "
                          f"{' or '.join(ENCODINGS)}")
    for flag, value in (("--batch-size", data_cfg.batch_size),
                        ("--eval-batch-size", data_cfg.eval_batch_size)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    if in_chans not in (None, 1, 3):
        raise ConfigError(f"--in-chans {in_chans}: images convert to 1 (grey) or 3 (RGB)")
    ignored = {"csv": [("--image-size", data_cfg.image_size), ("--in-chans", in_chans)],
               "folder": [("--target", data_cfg.target)],
               "named": [("--target", data_cfg.target), ("--val-dir", data_cfg.val_dir)]}
    what = {"csv": "csv: tables", "folder": "folder: images", "named": "named data sets"}[kind]
    for flag, value in ignored[kind]:
        if value is not None:
            raise ConfigError(f"{flag} does not apply to {what}; drop it")


def build_data(data_cfg: Any, *, seed: int = 0, device: torch.device | str = "cpu",
               channels_last: bool = True, in_chans: int | None = None) -> DataBundle:
    """Train/val/test loaders for the data section of a run config (``DataConfig``).

    ``data_cfg.name``: ``fashion-mnist``, ``mnist``, ``kmnist``, ``cifar10``, ``cifar100``
    (found via ``data_dir``, ``$RESNETLAB_DATA``, the Debian package, or downloaded unless
    ``download`` is false), ``folder:PATH`` (``PATH/<class>/<image>``, or ``PATH/train`` +
    ``PATH/val`` [+ ``PATH/test``]) or ``csv:PATH`` with ``target``.  ``val_size`` None follows
    the data (a named set's 5000; 10% of a folder or table, at most 5000), a float in (0, 1) is
    a fraction, an int a count; the hold-out and the stratified ``train_size`` subset are fixed
    by ``split_seed``, so runs with different ``seed`` score the same images.  ``augment`` None
    follows the data too (a named set's recipe, nothing for folders); tables are never
    augmented, so an image recipe's augmentation is dropped for them.  ``in_chans`` converts
    images to 1 or 3 channels.  ``bundle.meta["split"]`` states the split used.
    """
    kind = data_kind(data_cfg.name)
    _check(data_cfg, kind, in_chans)
    run = RunSide(seed, torch.device(device), channels_last, in_chans)
    augment = "default" if data_cfg.augment in _AUTO else data_cfg.augment
    if kind == "csv":
        bundle = build_table(data_cfg.name[4:], data_cfg, run)
        if augment not in ("default", "none"):  # a recipe's image augmentation, or a flag's
            bundle.meta["augment_dropped"] = augment
        return bundle
    size = _image_size(data_cfg.image_size)
    if kind == "folder":
        return build_folder(data_cfg.name[7:], data_cfg, run, size, augment)
    return build_named(data_cfg, run, size, augment)
