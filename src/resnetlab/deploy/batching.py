"""Dynamic batching for the server: concurrent requests become one forward pass.

Requests put their preprocessed rows on a thread-safe queue and await an asyncio future; one
worker thread takes the first waiting job, then keeps collecting until ``max_batch`` rows are
queued or ``max_wait_ms`` has passed since that first job, runs the network once on all of
them (off the event loop, so the server keeps accepting and decoding meanwhile), and hands
each job its rows back on its own event loop.  Under load the queue is never empty when a pass
ends, so batches fill without waiting.

It waits only for requests that are on their way: ``pending()`` (the server's count of requests
received but still being decoded) is 0 for a lone client, and then the batch runs at once
instead of idling ``max_wait_ms`` for company that cannot come (measured with
``benchmarks/serve.py``: at 1 client a fixed 5 ms wait halved the throughput).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Batcher"]


@dataclass
class _Job:
    x: torch.Tensor
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _resolve(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Batcher:
    """Groups concurrent ``submit`` calls into forward passes of at most ``max_batch`` rows.

    ``forward`` maps a float32 batch to one output row per input row; ``on_batch(n)`` is told
    each pass's size (the metrics' batch-size histogram).  ``close`` finishes every job
    already queued, then stops the thread.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 32,
                 max_wait_ms: float = 5.0, on_batch: Callable[[int], None] | None = None,
                 pending: Callable[[], int] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch}: must be at least 1")
        self.forward, self.max_batch = forward, max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.on_batch = on_batch or (lambda n: None)
        self.pending = pending or (lambda: 1)  # unknown: always wait up to max_wait
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="resnetlab-batcher", daemon=True)
        self._thread.start()

    async def submit(self, x: torch.Tensor) -> torch.Tensor:
        """The outputs for ``x``'s rows, computed in a batch with other waiting requests."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(x, future, loop))
        return await future

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, then stop the worker thread (waits up to ``timeout`` s)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            self._run(jobs)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` and the jobs that arrive within ``max_wait`` of it, up to ``max_batch``
        rows; True when the close sentinel was reached (after the jobs before it)."""
        jobs, rows = [first], len(first.x)
        deadline = time.monotonic() + self.max_wait
        while rows < self.max_batch:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not self.pending():  # nobody on the way: take what is queued
                    job = self._queue.get_nowait()
                else:  # re-check pending() every 0.5 ms while waiting
                    job = self._queue.get(timeout=min(left, 0.0005))
            except queue.Empty:
                if left <= 0 or not self.pending():
                    break
                continue
            if job is None:
                return jobs, True
            jobs.append(job)
            rows += len(job.x)
        return jobs, False

    def _run(self, jobs: list[_Job]) -> None:
        """One forward pass per ``max_batch`` rows (a job larger than the room left is run in
        the same pass sequence, never split across replies)."""
        try:
            x = torch.cat([job.x for job in jobs])
            parts = []
            for chunk in x.split(self.max_batch):
                self.on_batch(len(chunk))
                parts.append(self.forward(chunk))
            out, error = torch.cat(parts), None
        except Exception as err:  # a bug in the backend: every waiting request gets it
            out, error = None, err
        start = 0
        for job in jobs:
            rows = None if out is None else out[start:start + len(job.x)]
            start += len(job.x)
            try:
                job.loop.call_soon_threadsafe(_resolve, job.future, rows, error)
            except RuntimeError:  # that event loop is closed: nobody waits for this answer
                pass
