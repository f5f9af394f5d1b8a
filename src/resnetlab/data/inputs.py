"""Preprocess raw inputs for prediction exactly as training did, from a bundle's ``meta``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnetlab.data.augment import Normalize
from resnetlab.data.folders import image_files
from resnetlab.data.readers.image import IMAGE_EXTENSIONS, decode_image
from resnetlab.data.readers.table import read_csv
from resnetlab.data.tables import TableSchema
from resnetlab.utils.errors import ConfigError, DataError

__all__ = ["expand_inputs", "preprocess_inputs"]


def expand_inputs(paths, suffixes: tuple[str, ...]) -> list[Path]:
    """Files as given, folders expanded recursively (sorted) to their files with ``suffixes``;
    hidden files (macOS ``._x.png`` forks) are left out.  One DataError names a bad path."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = (image_files(p) if suffixes == IMAGE_EXTENSIONS
                     else sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes
                                 and not f.name.startswith(".") and f.is_file()))
            if not found:
                raise DataError(f"{p}: no {'/'.join(suffixes)} files in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not files:
        raise DataError("no input files given")
    return files


def _images(paths: list[str | Path], meta: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    files = expand_inputs(paths, IMAGE_EXTENSIONS)
    chans, size = int(meta["in_chans"]), tuple(meta["image_size"])
    x = torch.from_numpy(np.stack([decode_image(f, chans, size) for f in files]))
    return Normalize(meta["mean"], meta["std"])(x), [str(f) for f in files]


def _rows(paths: list[str | Path], meta: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    schema = TableSchema.from_meta(meta["table"])
    parts, labels = [], []
    for f in expand_inputs(paths, (".csv", ".tsv", ".txt")):
        table = read_csv(f)
        parts.append(schema.features(table))
        labels += [f"{f}:row {line}" for line in table.lines]
    return torch.from_numpy(np.concatenate(parts)), labels


def preprocess_inputs(paths: list[str | Path], meta: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """Turn image files/folders (recursively) or CSV files into one normalised float32 batch.

    Images get the training channel conversion, resize (cover + centre crop) and mean/std;
    CSV rows the training column statistics and categories (a target column, if present, is
    ignored).  Returns ``(x, labels)`` with one label per row: the file path, or
    ``"file.csv:row N"`` (file line, header = row 1).  ``x`` is contiguous NCHW (or N x F).
    An unreadable file raises ``DataError`` naming it.
    """
    kind = meta.get("kind")
    if kind == "image":
        return _images(paths, meta)
    if kind == "table":
        return _rows(paths, meta)
    raise ConfigError(f"data meta of kind {kind!r}: expected 'image' or 'table' (is this a "
                      "resnetlab checkpoint?)")
