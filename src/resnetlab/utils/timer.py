"""Wall-clock timing that waits for queued GPU work, so numbers mean what they say."""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


class Timer:
    """``with Timer() as t: ...; t.seconds``; synchronises CUDA on entry and exit."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
