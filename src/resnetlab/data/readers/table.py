"""CSV files: cells as text, with the file line of every row kept for error messages.

A bad cell is an error naming the file, row (file line, header = row 1) and column; it is never
silently dropped or shifted.  Turning cells into model inputs (standardising, encoding) is
:mod:`resnetlab.data.tables`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnetlab.utils.errors import DataError

__all__ = ["Table", "read_csv", "numeric_column", "MISSING", "is_missing"]

# Cells that mean "no value" (pandas' and R's usual spellings; case-insensitive).  In a numeric
# column they become NaN and :mod:`resnetlab.data.tables` fills them with the training mean; in
# a categorical column they are the category "(missing)".  Any other text is an error.
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


def is_missing(cell: str) -> bool:
    """True for an empty cell or one of :data:`MISSING`'s spellings."""
    return cell.strip().lower() in MISSING

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
    if not header:
        raise DataError(f"{path}: the file is empty (it needs a header row, then data rows)")
    if len(set(header)) != len(header) or "" in header:
        raise DataError(f"{path}: the first row must be a header of unique, non-empty names")
    if not rows:
        raise DataError(f"{path}: empty data set (no data rows under the header)")
    return Table(path, header, rows, lines)


def numeric_column(table: Table, name: str, *, allow_missing: bool = False) -> np.ndarray:
    """A numeric column as float64; the first bad cell (empty, text, NaN, inf) is an error.

    ``allow_missing``: cells of :data:`MISSING` (empty, NA, nan, ...) become NaN instead.
    """
    cells = table.column(name)
    if allow_missing:
        cells = ["nan" if is_missing(c) else c for c in cells]
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
    bad = np.flatnonzero(~np.isfinite(values) & ~(allow_missing & np.isnan(values)))
    if bad.size:
        raise DataError(f"{table.where(int(bad[0]), name)}: {cells[bad[0]].strip()} is not a finite "
                        f"number ({bad.size} NaN/inf cells); replace them before training")
    return values
