"""Errors a user can cause.  The CLI prints them as one line (no traceback) and exits 2."""

from __future__ import annotations

import errno
import os

__all__ = ["UserError", "DataError", "ConfigError", "StorageError", "NonFiniteError",
           "RunLockedError", "storage_error"]


class UserError(Exception):
    """A mistake in input, a flag or a file.  The message names the file/row/flag and the fix."""


class DataError(UserError, ValueError):
    """Bad or missing data: the message names the file (and row or index)."""


class ConfigError(UserError, ValueError):
    """An impossible combination of options: the message names the option."""


class StorageError(UserError, OSError):
    """A path cannot be written: full disk, read-only, no permission, a file where a folder
    belongs.  Also an ``OSError``, so code that catches I/O errors keeps catching it."""

    def __str__(self) -> str:  # OSError would print "[Errno N] ..." once errno is set
        return str(self.args[0]) if self.args else ""


class NonFiniteError(UserError, ValueError):
    """Weights with NaN/inf values: they are never saved as a checkpoint."""


class RunLockedError(UserError):
    """Another live process holds the run directory's lock."""


# errno -> what the user reads and what to do about it
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(err: OSError, path: str | os.PathLike, doing: str, flag: str | None = None,
                  note: str = "") -> StorageError:
    """One-line :class:`StorageError` for ``err`` raised while ``doing`` something at ``path``.

    ``flag`` (e.g. ``--runs-dir``) names the option that chose the path, so the user knows
    what to change; ``note`` is appended (e.g. that the previous checkpoint is unchanged).
    """
    where = f"{flag} {path}" if flag else str(path)
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in _DISK_FULL:
        fix = "disk full: free some space there" + (f" or choose another {flag}" if flag else "")
    elif err.errno in _NOT_WRITABLE:
        fix = "not writable: check its permissions" + (f" or choose another {flag}" if flag else "")
    elif err.errno in (errno.EEXIST, errno.ENOTDIR):
        fix = "a file is in the way where a folder belongs: remove it" + (
            f" or choose another {flag}" if flag else "")
    else:
        fix = "check the path" + (f" or choose another {flag}" if flag else "")
    out = StorageError(f"{where}: {doing} failed ({reason}); {fix}" + (f"; {note}" if note else ""))
    out.errno, out.filename = err.errno, err.filename  # one-argument OSError: str() is the line
    return out
