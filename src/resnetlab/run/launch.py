"""Data-parallel runs started from one process: torchrun on this machine, then the run directory.

``resnetlab train --nproc 4`` and ``resnetlab.run.train(cfg, world_size=4)`` come here.  The
config goes to a temporary YAML file, ``python -m torch.distributed.run --standalone
--nproc-per-node 4 -m resnetlab.run.worker FILE`` runs :mod:`resnetlab.run.worker` in every process (each calls
:func:`resnetlab.run.train`, which joins the process group), and the finished run directory is
opened and returned.  The run gets its ``name`` here, before launching, so that torchrun's
``--max-restarts`` finds the run again and resumes it from its last complete checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from resnetlab.engine.config import RunConfig
from resnetlab.engine.rundir import default_run_name
from resnetlab.utils.device import threads_per_process
from resnetlab.utils.errors import ConfigError, UserError

__all__ = ["DistributedRunFailed", "launch", "torchrun_command"]


class DistributedRunFailed(UserError):
    """torchrun ended with a non-zero status (a rank failed; torchrun's report names it)."""


def torchrun_command(world_size: int, max_restarts: int, worker_args: list[str]) -> list[str]:
    """The command line that starts ``world_size`` local ranks of :func:`main`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={world_size}", f"--max-restarts={max_restarts}",
            "-m", "resnetlab.run.worker", *worker_args]


def _check(world_size: int, max_restarts: int) -> None:
    if world_size < 1:
        raise ConfigError(f"--nproc {world_size}: give the number of processes, at least 1")
    if max_restarts < 0:
        raise ConfigError(f"--max-restarts {max_restarts}: give 0 or more restarts")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--nproc inside torchrun: this process is already one of "
                          f"{os.environ['WORLD_SIZE']} ranks; drop --nproc")


def _name(cfg: RunConfig) -> str:
    """A run name that is free now (the run directory itself is made by rank 0)."""
    base = default_run_name(cfg.model.name, cfg.data.name)
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}-{attempt}"
        if not (Path(cfg.runs_dir) / name).exists():
            return name
    raise ConfigError(f"--runs-dir {cfg.runs_dir}: no free run name near {base}; pass --name")


def launch(cfg: RunConfig | None, world_size: int, *, resume_dir: Path | None = None,
           overrides: dict[str, Any] | None = None, max_restarts: int = 0, test_on: str = "best",
           progress: bool | None = None) -> Path:
    """Run ``cfg`` (or resume ``resume_dir`` with ``overrides``) on ``world_size`` local
    processes; returns the run directory.  A failed job raises :class:`DistributedRunFailed`; Ctrl-C stops every rank
    (torchrun forwards it) and raises ``KeyboardInterrupt``."""
    _check(world_size, max_restarts)
    # Each rank gets its share of the cores (torchrun would give each rank one thread).
    threads = threads_per_process(world_size)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    flag = {None: "auto", True: "yes", False: "no"}[progress]
    with tempfile.TemporaryDirectory(prefix="resnetlab-launch-") as tmp:
        if resume_dir is not None:
            args = ["--resume", str(resume_dir), "--overrides", json.dumps(overrides or {})]
            run_dir = Path(resume_dir)
        else:
            assert cfg is not None
            cfg.name = cfg.name or _name(cfg)
            cfg.to_yaml(Path(tmp) / "config.yaml")
            args, run_dir = [str(Path(tmp) / "config.yaml")], Path(cfg.runs_dir) / cfg.name
        command = torchrun_command(world_size, max_restarts,
                                   [*args, "--test-on", test_on, "--progress", flag])
        proc = subprocess.Popen(command, env=env)
        try:
            status = proc.wait()
        except KeyboardInterrupt:  # torchrun got the same Ctrl-C and is stopping the ranks
            _wait_or_kill(proc)
            raise
    if status != 0:
        where = f"; resume with: resnetlab train --resume {run_dir} --nproc {world_size}" \
            if (run_dir / "checkpoints").is_dir() else ""
        raise DistributedRunFailed(f"the {world_size}-process run exited with status {status} "
                                   f"(torchrun's report above names the failed rank){where}")
    return run_dir


def _wait_or_kill(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
