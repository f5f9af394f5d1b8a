"""The one clock of a training run: wall time, and the part of it spent in training steps."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Clock"]


@dataclass
class _Mark:
    samples: int = 0
    train_s: float = 0.0


class Clock:
    """Wall seconds of the run and of the current epoch (evaluation and checkpoints included),
    and seconds spent training (excluded while :meth:`pause`\\ d), for samples/s.

    Every reading goes through :meth:`tick`, so the three totals always agree on "now".
    ``elapsed_s``/``epoch_time_s`` continue from a resumed run's saved values.
    """

    def __init__(self, elapsed_s: float = 0.0, epoch_time_s: float = 0.0):
        self.elapsed_s, self.epoch_time_s, self.train_s = elapsed_s, epoch_time_s, 0.0
        self.samples = 0
        self.training = True
        self._window, self._epoch = _Mark(), _Mark()
        self._last = time.perf_counter()

    def tick(self) -> None:
        """Add the time since the last tick to the totals."""
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        self.elapsed_s += dt
        self.epoch_time_s += dt
        if self.training:
            self.train_s += dt

    def pause(self) -> None:
        """Stop counting training time (evaluation, checkpoints)."""
        self.tick()
        self.training = False

    def resume(self) -> None:
        self.tick()
        self.training = True

    def _rate(self, mark: _Mark) -> float:
        self.tick()
        return (self.samples - mark.samples) / max(self.train_s - mark.train_s, 1e-9)

    def window_rate(self) -> float:
        """Training samples/s since the previous call."""
        rate = self._rate(self._window)
        self._window = _Mark(self.samples, self.train_s)
        return rate

    def epoch_rate(self) -> float:
        """Training samples/s since the epoch began."""
        return self._rate(self._epoch)

    def new_epoch(self) -> None:
        self.tick()
        self._epoch = _Mark(self.samples, self.train_s)
        self.epoch_time_s = 0.0
