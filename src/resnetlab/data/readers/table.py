"""CSV tables for the MLP-ResNet.

One column is the class label (``--target``).  Other columns are numeric (standardised to zero
mean and unit variance) or categorical (one-hot, or integer codes for an embedding layer).  The
statistics and category lists are fitted on the training rows only and kept in a
:class:`TableSchema`, which round-trips through JSON so prediction preprocesses new rows exactly
like training did.  A bad cell is an error naming the file, row (file line, header = row 1) and
column; it is never silently dropped or shifted.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnetlab.utils.errors import ConfigError, DataError

__all__ = ["Table", "TableSchema", "read_csv", "fit_schema", "target_codes"]

ENCODINGS = ("onehot", "embed")


@dataclass
class Table:
    """Raw CSV cells; ``lines[i]`` is the file line of ``rows[i]`` (header is line 1)."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        """The cells of column ``name``; ``DataError`` listing the columns if there is none."""
        if name not in self.header:
            raise DataError(f"{self.path}: no column {name!r} (columns: {', '.join(self.header)})")
        j = self.header.index(name)
        return [row[j] for row in self.rows]

    def where(self, i: int, name: str) -> str:
        """``"file row N, column 'name'"`` for the i-th data row, for error messages."""
        return f"{self.path} row {self.lines[i]}, column {name!r}"


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def read_csv(path: str | Path) -> Table:
    """Read a CSV file with a header row (delimiter , ; tab or | detected; UTF-8, BOM allowed)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, _dialect(fh.read(64 * 1024)))
            fh.seek(0)
            header = [h.strip() for h in next(reader, [])]
            rows, lines = [], []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                if len(row) != len(header):
                    raise DataError(f"{path} row {reader.line_num}: {len(row)} cells but the "
                                    f"header has {len(header)}; fix the quoting or the delimiter")
                rows.append(row)
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None
    if not header or len(set(header)) != len(header) or "" in header:
        raise DataError(f"{path}: the first row must be a header of unique, non-empty names")
    if not rows:
        raise DataError(f"{path}: empty data set (no data rows under the header)")
    return Table(path, header, rows, lines)


def _floats(table: Table, name: str) -> np.ndarray:
    """A numeric column as float64; the first bad cell (empty, text, NaN, inf) is an error."""
    cells = table.column(name)
    try:
        values = np.asarray(cells, dtype=np.float64)
    except ValueError:
        for i, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                what = "an empty cell" if not cell.strip() else f"{cell!r} is not a number"
                raise DataError(f"{table.where(i, name)}: {what} in a numeric column; fix the "
                                "cell or drop the row") from None
        raise
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"{table.where(int(bad[0]), name)}: {cells[bad[0]].strip()} is not a finite "
                        f"number ({bad.size} NaN/inf cells); replace them before training")
    return values


def _looks_numeric(cells: list[str]) -> bool:
    """Numeric when most cells parse as numbers; the rest are then reported as bad cells."""
    parsed = 0
    for cell in cells:
        try:
            float(cell)
            parsed += 1
        except ValueError:
            pass
    return parsed * 2 > len(cells)


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
                   list(meta["categorical"]), meta.get("encoding", "onehot"))

    def features(self, table: Table) -> np.ndarray:
        """``(N, F)`` float32 features of every row of ``table`` (the target column is ignored)."""
        parts = [((_floats(table, c["name"]) - c["mean"]) / c["std"])[:, None]
                 for c in self.numeric]
        for col in self.categorical:
            lookup = {cat: k for k, cat in enumerate(col["categories"])}
            codes = np.array([lookup.get(v.strip(), -1) for v in table.column(col["name"])])
            if self.encoding == "onehot":
                parts.append(codes[:, None] == np.arange(len(lookup))[None, :])
            else:
                parts.append(np.where(codes < 0, len(lookup), codes)[:, None])
        if not parts:
            return np.zeros((len(table.rows), 0), dtype=np.float32)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def labels(self, table: Table) -> np.ndarray:
        """Class indices of the target column; an empty or unknown value names its row."""
        lookup = {c: k for k, c in enumerate(self.classes)}
        out = np.empty(len(table.rows), dtype=np.int64)
        for i, value in enumerate(table.column(self.target)):
            if value.strip() not in lookup:
                raise DataError(f"{table.where(i, self.target)}: target {value!r} is not one of "
                                f"the {len(self.classes)} classes seen in training")
            out[i] = lookup[value.strip()]
        return out


def target_codes(table: Table, target: str | None) -> np.ndarray:
    """Integer codes of the target column (for stratified splits); checks it exists and is full."""
    if target is None:
        raise ConfigError(f"csv:{table.path} needs --target COLUMN "
                          f"(columns: {', '.join(table.header)})")
    values = [v.strip() for v in table.column(target)]
    if "" in values:
        raise DataError(f"{table.where(values.index(''), target)}: empty target cell; every row "
                        "needs a class")
    return np.unique(np.asarray(values), return_inverse=True)[1].reshape(-1)


def fit_schema(table: Table, target: str | None, train_rows: np.ndarray, *,
               categorical: list[str] | tuple[str, ...] = (), encoding: str = "onehot"
               ) -> TableSchema:
    """Decide column types and fit statistics on ``train_rows`` (indices into ``table.rows``).

    Column types are decided from all rows (a structural choice, not a statistic); a column is
    numeric when most of its cells are numbers, unless listed in ``categorical``.  Classes are
    every value of the target column, sorted (numerically when they are numbers).
    """
    target_codes(table, target)
    assert target is not None
    if encoding not in ENCODINGS:
        raise ConfigError(f"categorical encoding {encoding!r}: choose {' or '.join(ENCODINGS)}")
    for name in categorical:
        table.column(name)  # raises naming the file and the available columns
    values = {v.strip() for v in table.column(target)}
    schema = TableSchema(target, _sort_classes(values), encoding=encoding)
    for name in table.header:
        if name == target:
            continue
        cells = table.column(name)
        if name not in categorical and _looks_numeric(cells):
            train = _floats(table, name)[train_rows]
            std = float(train.std())
            # a constant column stays centred at 0 instead of dividing by zero
            schema.numeric.append({"name": name, "mean": float(train.mean()),
                                   "std": std if std > 0 else 1.0})
        else:
            cats = sorted({cells[i].strip() for i in train_rows})
            schema.categorical.append({"name": name, "categories": cats})
    return schema
