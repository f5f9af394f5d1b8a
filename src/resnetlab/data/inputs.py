"""Preprocess raw inputs for prediction exactly as training did, from a bundle's ``meta``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnetlab.data.augment import Normalize
from resnetlab.data.folders import image_files
from resnetlab.data.readers.image import IMAGE_EXTENSIONS, decode_image
from resnetlab.data.readers.table import Table, read_csv
from resnetlab.data.tables import TableSchema
from resnetlab.utils.errors import ConfigError, DataError

__all__ = ["expand_inputs", "preprocess_inputs", "decode_images", "table_features",
           "input_columns", "records_table"]


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


def decode_images(sources: Sequence[str | Path | bytes], meta: dict[str, Any], *,
                  names: Sequence[str] | None = None, max_pixels: int | None = None
                  ) -> torch.Tensor:
    """Images (files, or their bytes) to one normalised float32 NCHW batch, as training did:
    channel conversion, resize (cover + centre crop) and the run's mean/std.  ``names`` label
    the sources in errors; ``max_pixels`` caps each image's pixel count (``decode_image``)."""
    chans, size = int(meta["in_chans"]), tuple(meta["image_size"])
    labels = names if names is not None else [str(s) for s in sources]
    x = torch.from_numpy(np.stack([decode_image(s, chans, size, max_pixels=max_pixels, name=n)
                                   for s, n in zip(sources, labels, strict=True)]))
    return Normalize(meta["mean"], meta["std"])(x)


def _images(paths: list[str | Path], meta: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    files = expand_inputs(paths, IMAGE_EXTENSIONS)
    return decode_images(files, meta), [str(f) for f in files]


def table_features(table: Table, meta: dict[str, Any]) -> torch.Tensor:
    """``(N, F)`` float32 model inputs of a table's rows, with the training column statistics
    and categories of ``meta["table"]`` (a target column, if present, is ignored)."""
    return torch.from_numpy(TableSchema.from_meta(meta["table"]).features(table))


def input_columns(meta: dict[str, Any]) -> list[str]:
    """The columns a table model reads, numeric first, in the order of its training schema."""
    table = meta["table"]
    return [c["name"] for c in table["numeric"]] + [c["name"] for c in table["categorical"]]


def records_table(records: Sequence[Any], meta: dict[str, Any], name: str = "request") -> Table:
    """JSON rows (objects keyed by column, or lists in :func:`input_columns` order) as the
    cells of a CSV table, so they go through :func:`table_features` like a file's rows.

    ``null`` is a missing cell (filled as in training); NaN/inf numbers, unknown or absent
    columns and rows of the wrong length raise ``DataError`` naming the row.
    """
    columns, target = input_columns(meta), meta["table"].get("target")
    if not records:
        raise DataError(f"{name}: no rows")
    rows = [[_cell(v, f"{name} row {i + 1}, column {c!r}") for c, v in
             zip(columns, _row_values(row, columns, target, f"{name} row {i + 1}"), strict=True)]
            for i, row in enumerate(records)]
    return Table(Path(name), columns, rows, list(range(1, len(rows) + 1)))


def _row_values(row: Any, columns: list[str], target: str | None, where: str) -> list[Any]:
    if isinstance(row, list):
        if len(row) != len(columns):
            raise DataError(f"{where}: {len(row)} values but the model reads {len(columns)} "
                            f"columns ({', '.join(columns)})")
        return row
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row is an object keyed by column or a list of values")
    unknown = [repr(k) for k in row if k not in columns and k != target]
    missing = [repr(c) for c in columns if c not in row]
    if unknown or missing:
        what = (f"unknown column(s) {', '.join(unknown)}" if unknown
                else f"missing column(s) {', '.join(missing)}")
        raise DataError(f"{where}: {what} (the model reads {', '.join(columns)})")
    return [row[c] for c in columns]


def _cell(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{where}: {value!r} is not a number, a string or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{where}: {value} is not a finite number; send null for a missing value")
    return value if isinstance(value, str) else repr(value)


def _rows(paths: list[str | Path], meta: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    parts, labels = [], []
    for f in expand_inputs(paths, (".csv", ".tsv", ".txt")):
        table = read_csv(f)
        parts.append(table_features(table, meta))
        labels += [f"{f}:row {line}" for line in table.lines]
    return torch.cat(parts), labels


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
