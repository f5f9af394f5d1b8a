"""Tables as data: CSV rows -> standardised / encoded features for the MLP-ResNet.

One column is the target (``--target``): a class label, or a number to regress (``--task
regression``, or automatically for a numeric target with more than 20 distinct values, not all
integers or more than one per 10 rows).  A regression target is standardised with the training
rows' mean and standard deviation (kept in the schema; predictions are mapped back).  Other columns are numeric (standardised to zero
mean and unit variance) or categorical (one-hot, or integer codes for an embedding layer).  The
statistics and category lists are fitted on the training rows only and kept in a
:class:`TableSchema`, which round-trips through JSON so prediction preprocesses new rows exactly
like training did.

Missing values (an empty cell, ``NA``, ``N/A``, ``nan``, ``null``, ``none`` or ``?``): in a
numeric column the cell gets the training mean (0 after standardising); in a categorical column
it is its own category, ``(missing)``.  Any other non-number in a numeric column is an error
naming the row and column, and the target column may have no missing cells.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnetlab.data.bundle import DataBundle, RunSide, check_single_class, loader, split_meta
from resnetlab.data.loaders import TensorSource
from resnetlab.data.readers.table import Table, is_missing, numeric_column, read_csv
from resnetlab.data.splits import resolve_val_size, split_train_val
from resnetlab.utils.errors import ConfigError, DataError

__all__ = ["TableSchema", "fit_schema", "target_codes", "ENCODINGS", "build_table",
           "build_table_with_schema", "MISSING_CATEGORY", "resolve_task", "TASKS", "regression_std"]

TASKS = ("classification", "regression")
_MANY_VALUES = 20  # more distinct numeric targets than this (see resolve_task): a regression
_BINS = 5  # quantile bins a regression target is stratified on when splitting

ENCODINGS = ("onehot", "embed")
MISSING_CATEGORY = "(missing)"


def _looks_numeric(cells: list[str]) -> bool:
    """Numeric when most present cells parse as numbers; the rest are then reported as bad
    cells.  Missing cells do not count either way."""
    parsed = present = 0
    for cell in cells:
        if is_missing(cell):
            continue
        present += 1
        try:
            float(cell)
            parsed += 1
        except ValueError:
            pass
    return parsed * 2 > present


def _category(cell: str) -> str:
    return MISSING_CATEGORY if is_missing(cell) else cell.strip()


def _sort_classes(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(values)


@dataclass
class TableSchema:
    """Everything needed to turn CSV rows into model inputs, fitted on training rows.

    ``numeric``: ``[{"name", "mean", "std"}]``; ``categorical``: ``[{"name", "categories"}]``.
    With ``encoding="onehot"`` each categorical column becomes ``len(categories)`` 0/1 features
    (an unseen category: all zeros).  With ``"embed"`` it becomes one feature holding the integer
    code, ``len(categories)`` for unseen values, for a model that embeds it
    (``embed_columns()`` gives index and cardinality).
    """

    target: str
    classes: list[str]
    numeric: list[dict[str, Any]] = field(default_factory=list)
    categorical: list[dict[str, Any]] = field(default_factory=list)
    encoding: str = "onehot"
    task: str = "classification"
    target_mean: float = 0.0  # regression: the model predicts (y - target_mean) / target_std
    target_std: float = 1.0

    @property
    def feature_names(self) -> list[str]:
        """One name per feature column: numeric names, then ``col=category`` or ``col``."""
        names = [c["name"] for c in self.numeric]
        for col in self.categorical:
            if self.encoding == "onehot":
                names += [f"{col['name']}={cat}" for cat in col["categories"]]
            else:
                names.append(col["name"])
        return names

    def embed_columns(self) -> list[dict[str, Any]]:
        """For ``encoding="embed"``: ``[{"name", "index", "cardinality"}]`` (unseen slot included)."""
        if self.encoding != "embed":
            return []
        start = len(self.numeric)
        return [{"name": c["name"], "index": start + k, "cardinality": len(c["categories"]) + 1}
                for k, c in enumerate(self.categorical)]

    def to_meta(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``from_meta`` rebuilds the schema from it)."""
        return {**asdict(self), "feature_names": self.feature_names,
                "embed_columns": self.embed_columns()}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TableSchema:
        """The schema saved by ``to_meta`` (e.g. from a checkpoint)."""
        return cls(meta["target"], list(meta["classes"]), list(meta["numeric"]),
                   list(meta["categorical"]), meta.get("encoding", "onehot"),
                   meta.get("task", "classification"), float(meta.get("target_mean", 0.0)),
                   float(meta.get("target_std", 1.0)))

    def to_target_units(self, z: np.ndarray) -> np.ndarray:
        """Standardised model outputs -> values of the target column (regression)."""
        return z * self.target_std + self.target_mean

    def features(self, table: Table) -> np.ndarray:
        """``(N, F)`` float32 features of every row of ``table`` (the target column is ignored)."""
        parts = []
        for c in self.numeric:
            z = (numeric_column(table, c["name"], allow_missing=True) - c["mean"]) / c["std"]
            parts.append(np.nan_to_num(z, nan=0.0)[:, None])  # missing: the training mean
        for col in self.categorical:
            lookup = {cat: k for k, cat in enumerate(col["categories"])}
            codes = np.array([lookup.get(_category(v), -1) for v in table.column(col["name"])])
            if self.encoding == "onehot":
                parts.append(codes[:, None] == np.arange(len(lookup))[None, :])
            else:
                parts.append(np.where(codes < 0, len(lookup), codes)[:, None])
        if not parts:
            return np.zeros((len(table.rows), 0), dtype=np.float32)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def labels(self, table: Table) -> np.ndarray:
        """Class indices of the target column (regression: its standardised float32 values);
        an empty, unknown or non-numeric value names its row."""
        if self.task == "regression":
            y = numeric_column(table, self.target)
            return ((y - self.target_mean) / self.target_std).astype(np.float32)
        lookup = {c: k for k, c in enumerate(self.classes)}
        out = np.empty(len(table.rows), dtype=np.int64)
        for i, value in enumerate(table.column(self.target)):
            if value.strip() not in lookup:
                raise DataError(f"{table.where(i, self.target)}: target {value!r} is not one of "
                                f"the {len(self.classes)} classes seen in training")
            out[i] = lookup[value.strip()]
        return out


def target_codes(table: Table, target: str | None, task: str = "classification") -> np.ndarray:
    """Integer codes of the target column (for stratified splits); checks it exists and is full.

    A regression target gets its quantile bin (so both splits span the range of values).
    """
    if target is None:
        raise ConfigError(f"csv:{table.path} needs --target COLUMN "
                          f"(columns: {', '.join(table.header)})")
    values = [v.strip() for v in table.column(target)]
    if "" in values:
        raise DataError(f"{table.where(values.index(''), target)}: empty target cell; every row "
                        "needs a class")
    if task == "regression":
        y = numeric_column(table, target)
        edges = np.quantile(y, np.linspace(0, 1, _BINS + 1)[1:-1])
        return np.searchsorted(edges, y, side="right")
    return np.unique(np.asarray(values), return_inverse=True)[1].reshape(-1)


def resolve_task(table: Table, target: str, task: str | None) -> str:
    """``task`` as given, else regression for a numeric target with many distinct values
    (more than 20, and either not all integers or more than one per 10 rows)."""
    if task is not None:
        if task not in TASKS:
            raise ConfigError(f"--task {task!r}: choose classification or regression")
        return task
    cells = [v.strip() for v in table.column(target)]
    try:
        values = np.unique(np.asarray(cells, dtype=np.float64))
    except ValueError:
        return "classification"
    many = len(values) > _MANY_VALUES and (
        not np.all(values == np.round(values)) or len(values) * 10 > len(cells))
    return "regression" if many else "classification"


def fit_schema(table: Table, target: str | None, train_rows: np.ndarray, *,
               categorical: list[str] | tuple[str, ...] = (), encoding: str = "onehot",
               task: str = "classification") -> TableSchema:
    """Decide column types and fit statistics on ``train_rows`` (indices into ``table.rows``).

    Column types are decided from all rows (a structural choice, not a statistic); a column is
    numeric when most of its cells are numbers, unless listed in ``categorical``.  Classes are
    every value of the target column, sorted (numerically when they are numbers); a regression
    has one output, named after the target, and the target's training mean and std.
    """
    target_codes(table, target)
    assert target is not None
    if encoding not in ENCODINGS:
        raise ConfigError(f"categorical encoding {encoding!r}: choose {' or '.join(ENCODINGS)}")
    for name in categorical:
        table.column(name)  # raises naming the file and the available columns
    schema = _target_schema(table, target, train_rows, encoding, task)
    for name in table.header:
        if name == target:
            continue
        cells = table.column(name)
        if name not in categorical and _looks_numeric(cells):
            train = numeric_column(table, name, allow_missing=True)[train_rows]
            train = train[~np.isnan(train)]
            mean, std = (float(train.mean()), float(train.std())) if train.size else (0.0, 1.0)
            # a constant column stays centred at 0 instead of dividing by zero
            schema.numeric.append({"name": name, "mean": mean, "std": std if std > 0 else 1.0})
        else:
            cats = sorted({_category(cells[i]) for i in train_rows})
            schema.categorical.append({"name": name, "categories": cats})
    return schema


def _target_schema(table: Table, target: str, train_rows: np.ndarray, encoding: str,
                   task: str) -> TableSchema:
    if task != "regression":
        values = {v.strip() for v in table.column(target)}
        return TableSchema(target, _sort_classes(values), encoding=encoding)
    y = numeric_column(table, target)[train_rows]
    std = float(y.std()) if y.size else 1.0
    return TableSchema(target, [target], encoding=encoding, task=task,
                       target_mean=float(y.mean()) if y.size else 0.0,
                       target_std=std if std > 0 else 1.0)  # a constant target stays centred


def build_table(path: str, data_cfg: Any, run: RunSide) -> DataBundle:
    """Bundle of ``csv:PATH`` (``--target`` names the class column; ``--val-dir`` may name a
    validation CSV).  Tables have no test split and no augmentation."""
    table = read_csv(Path(path).expanduser())
    target_codes(table, data_cfg.target)  # the column exists and is full
    task = resolve_task(table, data_cfg.target, data_cfg.task)
    codes = target_codes(table, data_cfg.target, task)
    val_table = read_csv(Path(data_cfg.val_dir).expanduser()) if data_cfg.val_dir else None
    if val_table is not None:
        val_size, val_source = 0, f"file {data_cfg.val_dir}"
    else:
        val_size, val_source = resolve_val_size(data_cfg.val_size, codes)
    train_rows, val_rows = split_train_val(codes, val_size=val_size,
                                           train_size=data_cfg.train_size,
                                           seed=data_cfg.split_seed)
    schema = fit_schema(table, data_cfg.target, train_rows,
                        categorical=tuple(data_cfg.categorical), encoding=data_cfg.encoding,
                        task=task)
    if task == "classification":
        check_single_class(f"csv:{path} (--target {data_cfg.target})", schema.classes,
                           data_cfg.allow_single_class)
    x, y = schema.features(table), schema.labels(table)
    vx, vy = ((schema.features(val_table), schema.labels(val_table)) if val_table is not None
              else (x[val_rows], y[val_rows]))

    def tensors(xs: np.ndarray, ys: np.ndarray) -> TensorSource:
        return TensorSource(torch.from_numpy(xs).to(run.device), torch.from_numpy(ys).to(run.device))

    loaders = {"train": loader(tensors(x[train_rows], y[train_rows]), "train", data_cfg, run),
               "val": loader(tensors(vx, vy), "val", data_cfg, run)}
    meta = {"kind": "table", "name": f"csv:{path}", "source": path, "classes": schema.classes,
            "num_classes": len(schema.classes), "input_shape": [x.shape[1]],
            "table": schema.to_meta(), "augment": "none", "task": task,
            "split": split_meta(loaders, data_cfg, val_source)}
    return DataBundle(loaders["train"], loaders["val"], None, schema.classes, meta)


def build_table_with_schema(path: str, table_meta: dict[str, Any], data_cfg: Any,
                            run: RunSide) -> DataBundle:
    """Every row of ``csv:PATH`` as the ``test`` split, preprocessed with a trained run's
    schema (``meta["table"]``): what ``resnetlab eval RUN --data csv:held_out.csv`` scores.

    The target column is the run's; a file without it gets the columns it does have listed.
    """
    schema = TableSchema.from_meta(table_meta)
    table = read_csv(Path(path).expanduser())
    x, y = schema.features(table), schema.labels(table)
    source = TensorSource(torch.from_numpy(x).to(run.device), torch.from_numpy(y).to(run.device))
    loaders = {"test": loader(source, "test", data_cfg, run)}
    meta = {"kind": "table", "name": f"csv:{path}", "source": path, "classes": schema.classes,
            "num_classes": len(schema.classes), "input_shape": [x.shape[1]],
            "table": schema.to_meta(), "augment": "none", "task": schema.task,
            "split": split_meta(loaders, data_cfg, "none (every row is test)")}
    return DataBundle(None, None, loaders["test"], schema.classes, meta)


def regression_std(meta: dict[str, Any]) -> float | None:
    """The target's standard deviation when ``meta`` (a bundle's or checkpoint's data meta)
    is a regression table, else None (the run API builds a task from it: resnetlab.run.tasks)."""
    if meta.get("task") != "regression":
        return None
    return float(meta["table"]["target_std"])
