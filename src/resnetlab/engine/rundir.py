"""Run directories: ``runs/<name>``, never overwritten, and locked while a process trains in
one (:func:`lock_run_dir`), so two ``train --resume`` of the same run cannot interleave."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from resnetlab.utils import notices
from resnetlab.utils.errors import ConfigError, RunLockedError, StorageError, storage_error

__all__ = ["new_run_dir", "default_run_name", "lock_run_dir", "made_by_job", "LOCK_FILE",
           "RUN_MARKER"]

LOCK_FILE = ".lock"
# Written into every run directory resnetlab creates: a restarted torchrun job may only clean a
# directory that carries it with its own job id (issue 22: a user's folder was deleted).
RUN_MARKER = ".resnetlab-run.json"


def _job_id() -> str | None:
    """torchrun's id of this job (``--rdzv-id``, a fresh uuid per ``--standalone`` launch), kept
    across its restarts; None outside torchrun."""
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    return job if job and job != "none" else None


def _write_marker(path: Path) -> None:
    marker = {"created_by": "resnetlab", "job": _job_id(), "pid": os.getpid(),
              "host": socket.gethostname(), "time": time.time()}
    try:
        (path / RUN_MARKER).write_text(json.dumps(marker))
    except OSError as err:
        raise storage_error(err, path, "creating the run directory", "--runs-dir") from None


def made_by_job(run_dir: str | Path) -> bool:
    """True when resnetlab created ``run_dir`` for the torchrun job this process belongs to:
    only then may a restart of that job clean or continue it."""
    job = _job_id()
    try:
        marker = json.loads((Path(run_dir) / RUN_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(marker, dict) and marker.get("created_by") == "resnetlab"
            and job is not None and marker.get("job") == job)


def default_run_name(model: str = "run", data: str | None = None) -> str:
    """``<model>-<data>-<YYYYmmdd-HHMMSS>``; ``folder:/a/b/pets`` contributes ``pets``."""
    parts = [model] + ([_slug(data)] if data else []) + [time.strftime("%Y%m%d-%H%M%S")]
    return "-".join(p for p in parts if p)


def _slug(text: str) -> str:
    text = text.split(":", 1)[-1].rstrip("/\\")
    text = re.split(r"[/\\]", text)[-1]
    text = re.sub(r"\.(csv|tsv)$", "", text)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def new_run_dir(runs_dir: str | Path, name: str | None = None, *, model: str = "run",
                data: str | None = None) -> Path:
    """Create and return ``runs_dir/name``; an existing directory is never reused.

    Without ``name`` the directory is :func:`default_run_name` (``-2``, ``-3``... appended when
    two runs start in the same second).  An explicit ``name`` that exists is a
    :class:`ConfigError`: continue it with ``--resume`` or pick another ``--name``.
    """
    runs_dir = _make_runs_dir(Path(runs_dir))
    if name is not None:
        if not name or Path(name).name != name or name in (".", ".."):
            raise ConfigError(f"--name {name!r} must be a plain directory name (no slashes)")
        path = runs_dir / name
        try:
            path.mkdir()
        except FileExistsError:
            raise ConfigError(f"run directory {path} already exists; use --resume {path} "
                              "or another --name") from None
        except OSError as err:
            raise storage_error(err, path, "creating the run directory", "--name") from None
        _write_marker(path)
        return path
    base = default_run_name(model, data)
    for attempt in range(1, 1000):
        path = runs_dir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise storage_error(err, runs_dir, "creating a run directory", "--runs-dir") from None
        _write_marker(path)
        return path
    raise ConfigError(f"could not create a new run directory under {runs_dir}")


def _make_runs_dir(runs_dir: Path) -> Path:
    """``runs_dir``, created if needed; a file in its place or a read-only disk is one line."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise StorageError(f"--runs-dir {runs_dir} is a file, not a folder; choose another "
                           "--runs-dir")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err, runs_dir, "creating the folder", "--runs-dir") from None
    return runs_dir


# ----------------------------------------------------------------------------- locking


@contextlib.contextmanager
def lock_run_dir(run_dir: str | Path, notify: Callable[[str], None] | None = None
                 ) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` (pid and host, as JSON) while the block runs; remove it after.

    A lock held by a live process is a :class:`RunLockedError` naming the directory and the
    pid.  A lock left by a process that died (same host, pid gone) is stale: it is taken over
    and ``notify`` (default: a line on stderr) says so.  A lock from another host cannot be
    checked and counts as held.  Use::

        with lock_run_dir(run_dir):
            fit(...)
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    say = notify or notices.say
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(3):  # a takeover can race another one: the exclusive create decides
        if _create_lock(path, mine):
            break
        _take_over_if_stale(run_dir, path, say)
    else:
        raise RunLockedError(f"{run_dir} is locked by another process ({path}); retry later")
    try:
        yield run_dir
    finally:
        if _read_lock(path) == mine:  # never remove a lock that another process took over
            path.unlink(missing_ok=True)


def _create_lock(path: Path, owner: dict) -> bool:
    """Create ``path`` holding ``owner`` if nobody holds it (O_EXCL: atomic on local disks)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as err:
        raise storage_error(err, path.parent, "locking the run directory") from None
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    return True


def _read_lock(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _take_over_if_stale(run_dir: Path, path: Path, say: Callable[[str], None]) -> None:
    """Remove a lock whose process is gone; raise :class:`RunLockedError` for a live one."""
    owner = _read_lock(path)
    if owner is None and _age_s(path) < 2.0:  # just created: its owner may still be writing
        time.sleep(0.2)
        owner = _read_lock(path)
        if owner is None and path.exists():
            raise RunLockedError(f"{run_dir} is being locked by another process right now "
                                 f"({path}); retry in a moment")
    pid, host = (owner or {}).get("pid"), (owner or {}).get("host")
    if owner is not None and not _is_stale(pid, host):
        where = "" if host == socket.gethostname() else f" on host {host}"
        raise RunLockedError(
            f"{run_dir} is in use by process {pid}{where} (lock file {path}); wait for it to "
            "finish, or delete the lock file if that process is gone")
    aside = path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
    try:
        os.replace(path, aside)  # only one of several racing processes moves the stale lock
    except FileNotFoundError:
        return
    if owner is not None and _read_lock(aside) != owner:
        # a racing process replaced the stale lock by its own meanwhile: give it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    what = f"process {pid} is gone" if owner else "its content was unreadable"
    say(f"{run_dir}: took over a stale lock ({what})")


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _is_stale(pid: object, host: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # not a lock this module wrote
    if host != socket.gethostname():
        return False  # another machine's process cannot be checked: assume it runs
    try:
        os.kill(pid, 0)  # signal 0 checks existence without sending anything
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    except OSError as err:
        return err.errno == errno.ESRCH
    return False
