"""``compare --jobs N``: a comparison's members trained N at a time, in local worker processes.

On a small CPU, two members on one thread each train more images per second than one member
on two threads (2-core AMD EPYC Zen 4, fp32, batch 64: 1.07x for ResNet-56, 1.08x for ResNet-20;
``benchmarks/README.md``), and each process's serial parts (start-up, evaluation set-up, the
final checkpoint) overlap the other's training.  The longest members start first, so the last
one to finish is a short one.

Each worker takes a member, trains it through :func:`resnetlab.run.compare._run_member` (so a
member cut off mid-run resumes from its checkpoint) and reports its run directory; the parent
reads the finished run back and rewrites the report, as the one-at-a-time loop does.  Ctrl-C
reaches every worker (one process group): each saves its member's checkpoint and stops, and
``resnetlab compare --resume DIR`` continues.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from resnetlab.engine.config import RunConfig
from resnetlab.run.experiment import Interrupted
from resnetlab.utils.device import threads_per_process
from resnetlab.utils.errors import ConfigError, UserError

__all__ = ["auto_jobs", "train_in_workers"]

_POLL_S = 2.0       # how often the parent checks that its workers are still alive
_STOP_WAIT_S = 120  # what a Ctrl-C'd worker gets to save its checkpoint before it is killed
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def auto_jobs(members: int, world_size: int, device: str) -> int:
    """``--jobs`` when not given: two members at a time on a CPU with at least two cores (the
    measured gain), one on a GPU or when each member already spans several processes."""
    import torch

    on_gpu = device != "cpu" and torch.cuda.is_available()
    if world_size > 1 or on_gpu or members < 2 or (os.cpu_count() or 1) < 2:
        return 1
    return 2


def train_in_workers(configs: Sequence[RunConfig], order: Sequence[int], jobs: int,
                     test_on: str, on_done: Callable[[int, Path], None]) -> None:
    """Train ``configs[i]`` for each ``i`` in ``order`` on ``jobs`` worker processes of
    ``cpu_count // jobs`` threads; ``on_done(i, run_dir)`` runs here as each one finishes."""
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's torch threads
    todo, results = ctx.Queue(), ctx.Queue()
    for position, i in enumerate(order, 1):
        todo.put((i, f"[{position}/{len(order)}] {configs[i].name}", configs[i].to_dict()))
    for _ in range(jobs):
        todo.put(None)  # one stop sign per worker
    threads = threads_per_process(jobs)
    workers = [ctx.Process(target=_worker, args=(todo, results, test_on, threads, os.getpid()),
                           daemon=False)
               for _ in range(jobs)]
    for proc in workers:
        proc.start()
    try:
        _collect(results, workers, configs, len(order), on_done)
    except BaseException:
        _stop(workers)
        raise
    for proc in workers:
        proc.join()


def _collect(results: Any, workers: list, configs: Sequence[RunConfig], count: int,
             on_done: Callable[[int, Path], None]) -> None:
    """Hand each finished member to ``on_done``; a member that failed stops the comparison."""
    for _ in range(count):
        index, outcome, detail = _next_result(results, workers)
        if outcome == "error":  # index None: the worker failed before its first member
            raise ConfigError(f"{'a worker' if index is None else configs[index].name}: {detail}")
        if outcome == "interrupted":
            raise Interrupted(Path(configs[index].runs_dir) / str(configs[index].name))
        on_done(index, Path(detail))


def _next_result(results: Any, workers: list) -> tuple[int, str, str]:
    while True:
        try:
            return results.get(timeout=_POLL_S)
        except queue.Empty:
            if not any(proc.is_alive() for proc in workers):
                raise ConfigError("compare --jobs: every worker process stopped before the "
                                  "comparison finished (see above); continue it with "
                                  "`resnetlab compare --resume DIR`") from None


def _stop(workers: list) -> None:
    """Let running workers save their members (SIGINT, as Ctrl-C would), then make sure they
    are gone."""
    for proc in workers:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGINT)
    for proc in workers:
        proc.join(timeout=_STOP_WAIT_S)
        if proc.is_alive():
            proc.terminate()
            proc.join()


def _stop_with(parent: int) -> None:
    """Have the kernel send this worker SIGINT when its parent dies (Linux), so a comparison
    killed with SIGKILL leaves no orphan training on: the worker saves its member and stops,
    as on Ctrl-C.  Elsewhere an orphan finishes its member, which ``--resume`` then keeps."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the parent died before the request was made
        raise KeyboardInterrupt


def _worker(todo: Any, results: Any, test_on: str, threads: int, parent: int) -> None:
    """One worker process: members from ``todo`` until its stop sign, each reported to
    ``results`` as ``(index, "done" | "error" | "interrupted", run_dir or message)``."""
    import torch

    from resnetlab.run.compare import _run_member
    from resnetlab.utils.notices import say

    torch.set_num_threads(threads)
    index = None  # the member being trained
    try:
        _stop_with(parent)
        while (item := todo.get()) is not None:
            index, label, cfg = item
            say(label)
            run = _run_member(RunConfig.from_dict(cfg), test_on, progress=False)
            results.put((index, "done", str(run.run_dir)))
            index = None
    except KeyboardInterrupt:
        if index is not None:
            results.put((index, "interrupted", ""))
    except UserError as err:
        results.put((index, "error", str(err)))
    except Exception as err:  # noqa: BLE001 - a bug: its traceback, then the parent stops
        traceback.print_exc(file=sys.stderr)
        results.put((index, "error", f"{type(err).__name__}: {err}"))
