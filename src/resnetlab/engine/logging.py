"""What a run writes and shows: metrics files, TensorBoard events, the rich progress bar.

Run-directory files (only rank 0 writes them):

``metrics.csv`` / ``metrics.jsonl``  one row per epoch (columns :data:`EPOCH_COLUMNS`):
    ``epoch`` counts completed epochs (fractional when ``max_steps`` stops mid-epoch),
    ``step`` is the optimiser step at the end of it, accuracies are fractions in [0, 1],
    ``lr`` is the rate of the epoch's last step, ``val_*`` are empty without a validation set,
    ``nonfinite_steps`` counts the steps skipped for a NaN/inf loss since the run began,
    ``images_per_s`` counts training steps only, ``elapsed_s`` is wall time including evaluation.
``steps.csv`` / ``steps.jsonl``  one row every ``log_every`` steps (:data:`STEP_COLUMNS`):
    ``loss``/``top1`` average the steps since the previous row; ``epoch`` is fractional.
``tb/``  TensorBoard events (``epoch/*`` and ``step/*`` scalars) when ``tensorboard`` is installed.

On resume, rows past the checkpoint's step are dropped first, so a run that was killed and
resumed has exactly the rows of an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from resnetlab.utils.notices import say

__all__ = ["EPOCH_COLUMNS", "STEP_COLUMNS", "MetricsWriter", "ProgressDisplay", "read_metrics",
           "tracked"]

EPOCH_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
    "nonfinite_steps", "images_per_s", "epoch_time_s", "elapsed_s",
)
REGRESSION_COLUMNS = ("train_rmse", "val_rmse", "val_r2")  # appended in a regression run
STEP_COLUMNS = ("step", "epoch", "lr", "loss", "top1", "images_per_s", "elapsed_s")


class MetricsWriter:
    """Appends epoch and step rows to CSV + JSONL (and TensorBoard when importable)."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._tb = None
        self._want_tb = tensorboard and enabled

    def truncate_after(self, step: int) -> None:
        """Drop rows with ``step`` greater than ``step`` (call before resuming at ``step``)."""
        if not self.enabled:
            return
        for stem in ("metrics", "steps"):
            _filter_csv(self.run_dir / f"{stem}.csv", step)
            _filter_jsonl(self.run_dir / f"{stem}.jsonl", step)
        self._open_tensorboard(purge_step=step)

    def add_missing(self, history: list[dict[str, Any]]) -> None:
        """Append the epoch rows of ``history`` (a checkpoint's) that ``metrics`` lacks: a run
        killed between saving an epoch's checkpoint and logging its row loses no row."""
        if not self.enabled:
            return
        logged = {int(r["step"]) for r in read_metrics(self.run_dir)}
        for row in history:
            if int(row["step"]) not in logged:
                self.epoch_row(row)

    def epoch_row(self, row: dict[str, Any]) -> None:
        regression = tuple(k for k in REGRESSION_COLUMNS if k in row)  # only regression rows
        self._write("metrics", EPOCH_COLUMNS + regression, row, "epoch", int(row["step"]))

    def step_row(self, row: dict[str, Any]) -> None:
        self._write("steps", STEP_COLUMNS, row, "step", int(row["step"]))

    def _write(self, stem: str, columns: tuple[str, ...], row: dict, tb_prefix: str, step: int) -> None:
        if not self.enabled:
            return
        row = {k: row.get(k) for k in columns}
        path = self.run_dir / f"{stem}.csv"
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            if new:
                writer.writeheader()
            writer.writerow({k: _cell(v) for k, v in row.items()})
        with open(self.run_dir / f"{stem}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        self._tensorboard(tb_prefix, row, step)

    def _open_tensorboard(self, purge_step: int | None = None) -> None:
        if self._tb is not None or not self._want_tb:
            return
        try:  # optional dependency: a missing tensorboard is not an error
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._want_tb = False
            return
        self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)

    def _tensorboard(self, prefix: str, row: dict, step: int) -> None:
        self._open_tensorboard()
        if self._tb is None:
            return
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _filter_csv(path: Path, max_step: int) -> None:
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        columns = rows[0].keys() if rows else None
    if columns is None:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(r for r in rows if r["step"] and int(float(r["step"])) <= max_step)
    path.write_text(out.getvalue())


def _filter_jsonl(path: Path, max_step: int) -> None:
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= max_step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill mid-write
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(run_dir: str | Path, kind: str = "epoch") -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (``kind="epoch"``) or ``steps.jsonl`` (``kind="step"``)."""
    path = Path(run_dir) / ("metrics.jsonl" if kind == "epoch" else "steps.jsonl")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _clock() -> float:
    """Seconds for the progress heartbeat (a function, so tests can drive it)."""
    return time.monotonic()


class ProgressDisplay:
    """Progress for a run: a rich bar, one plain line per epoch, or nothing.

    ``mode=None`` picks the bar when stderr is a terminal and plain lines otherwise (logs, CI);
    ``True`` forces the bar, ``False`` is silent (tests).  The bar spans the whole run and shows
    epoch, step, loss, accuracy, images/s and the ETA of the run.
    """

    # Off a terminal (CI, notebooks, ``| tee``) a plain line at least this often: an epoch can
    # take minutes on a loaded CPU, and silence that long reads as a hang (issue 22, item 13).
    HEARTBEAT_S = 10.0

    def __init__(self, mode: bool | None, total_steps: int, epochs: int, enabled: bool = True):
        self.epochs, self.total_steps = epochs, total_steps
        self._epoch = self._step = 0
        self._stats = ""
        self._start = self._last_line = _clock()
        if not enabled or mode is False:
            self.kind = "off"
        else:
            self.kind = "bar" if (mode or sys.stderr.isatty()) else "lines"
        self._progress = self._task = None
        if self.kind == "bar":
            self._start_bar(total_steps)

    def _start_bar(self, total_steps: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[ips]} img/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._task = self._progress.add_task("epoch", total=total_steps, loss="-", acc="-", ips="-")
        self._progress.start()

    def set_position(self, epoch: int, step: int) -> None:
        self._epoch, self._step = epoch, step
        if self._progress is not None:
            self._progress.update(self._task, completed=step,
                                  description=f"epoch {epoch + 1}/{self.epochs}")

    def advance(self) -> None:
        self._step += 1
        if self._progress is not None:
            self._progress.advance(self._task)
        elif self.kind == "lines" and _clock() - self._last_line >= self.HEARTBEAT_S:
            self._line(f"epoch {self._epoch + 1}/{self.epochs}  step {self._step}/"
                       f"{self.total_steps}{self._stats}  {_clock() - self._start:.0f}s elapsed")

    def show_stats(self, loss: float, top1: float, images_per_s: float) -> None:
        acc = "-" if top1 is None else f"{100 * top1:.2f}%"  # None: a regression
        self._stats = f"  loss {loss:.4f}  acc {acc}  {images_per_s:,.0f} img/s"
        if self._progress is not None:
            self._progress.update(self._task, loss=f"{loss:.4f}", acc=acc,
                                  ips=f"{images_per_s:,.0f}")

    def _line(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        self._last_line = _clock()

    def epoch_done(self, row: dict[str, Any]) -> None:
        if self.kind == "off":
            return
        line = format_epoch_row(row, self.epochs)
        if self._progress is not None:
            self._progress.console.print(line)
        else:
            self._line(line)

    def set_length(self, total_steps: int, epochs: int) -> None:
        """The run's length changed (a time budget's re-plan)."""
        self.total_steps, self.epochs = total_steps, epochs
        if self._progress is not None:
            self._progress.update(self._task, total=total_steps)

    def notice(self, text: str) -> None:
        """A notice the user must see in every progress mode (above the bar when there is one)."""
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            say(text)

    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        elif self.kind == "lines":
            say(text)  # a notice, through the one channel; it also counts as a sign of life
            self._last_line = _clock()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def tracked(batches: Iterable, description: str, mode: bool | None) -> Iterator:
    """``batches`` with progress: a transient bar counting batches on a terminal (``mode=None``
    or True), a start line and an end line off a terminal, nothing with ``mode=False``.

    For long passes outside the training loop, e.g. the final test evaluation with flip TTA.
    """
    if mode is False:
        yield from batches
        return
    start, count = time.perf_counter(), 0
    if mode or sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn("{task.description}: {task.completed} batches"),
                   TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description)
            for batch in batches:
                yield batch
                bar.advance(task)
        return
    print(f"{description} ...", file=sys.stderr, flush=True)
    last = _clock()
    for batch in batches:
        count += 1
        yield batch
        if _clock() - last >= ProgressDisplay.HEARTBEAT_S:  # a long pass is not a hang
            print(f"{description}: {count} batches, {time.perf_counter() - start:.0f}s",
                  file=sys.stderr, flush=True)
            last = _clock()
    print(f"{description}: {count} batches in {time.perf_counter() - start:.1f}s",
          file=sys.stderr, flush=True)


def format_epoch_row(row: dict[str, Any], epochs: int) -> str:
    """``epoch 3/10  step 1290  train 0.3121 / 88.91%  val 0.2876 / 89.80% (top-5 99.6%) ...``."""
    parts = [f"epoch {_num(row['epoch'])}/{epochs}", f"step {row['step']}"]
    if "train_rmse" in row:  # a regression row
        parts.append(f"train RMSE {row['train_rmse']:.4g}")
        if row.get("val_rmse") is not None:
            parts.append(f"val RMSE {row['val_rmse']:.4g} / R2 {row['val_r2']:.3f}")
    else:
        parts.append(f"train {row['train_loss']:.4f} / {100 * row['train_top1']:.2f}%")
    if row.get("val_loss") is not None and "train_rmse" not in row:
        parts.append(f"val {row['val_loss']:.4f} / {100 * row['val_top1']:.2f}% "
                     f"(top-5 {100 * row['val_top5']:.1f}%)")
    parts += [f"lr {row['lr']:.3g}", f"{row['images_per_s']:,.0f} img/s", f"{row['epoch_time_s']:.1f}s"]
    if row.get("nonfinite_steps"):
        parts.append(f"{row['nonfinite_steps']} non-finite steps skipped")
    return "  ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"
