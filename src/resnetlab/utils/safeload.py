"""The one way resnetlab opens a torch file: weights-only, and never a zip bomb.

``torch.load(weights_only=True)`` refuses code, but not size: a 2 MB ``.pth`` whose zip entry
inflates to 2 GiB takes gigabytes of RAM and most of a minute before anything says no.
``torch.save`` *stores* its zip entries (no compression), so a real file's declared entry sizes
add up to about its own size.  We read the zip directory (a few KB, no inflation) and refuse a
file whose declared sizes exceed :func:`size_cap` before torch sees it.  Legacy (pre-1.6,
pickle) files are not compressed at all, so their size on disk is their size in memory.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from resnetlab.utils.errors import DataError

__all__ = ["size_cap", "check_unpacked_size", "load_torch_file"]

# Slack above the file's own size: a stored zip's directory and padding (64-byte alignment
# per entry) make the declared total a little different from the file size; 4x plus 64 MiB
# leaves legitimate files far inside the cap while a zip bomb (ratios of 1000x) is far outside.
_RATIO = 4
_SLACK = 64 << 20


def size_cap(file_size: int) -> int:
    """Most bytes a torch file of ``file_size`` bytes may unpack to.  ``RESNETLAB_MAX_UNPACKED``
    (bytes) raises it for a user who really has compressed weights."""
    override = os.environ.get("RESNETLAB_MAX_UNPACKED", "")
    return int(override) if override.isdigit() else _RATIO * file_size + _SLACK


def check_unpacked_size(path: str | Path) -> None:
    """Raise :class:`DataError` if the zip at ``path`` declares more unpacked bytes than
    :func:`size_cap` allows.  Non-zip files pass (nothing in them inflates)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable torch zip file ({err})") from None
    size = path.stat().st_size
    if declared > (cap := size_cap(size)):
        raise DataError(f"{path}: refused: its zip entries unpack to {declared / 2**20:.0f} MiB "
                        f"from {size / 2**20:.1f} MiB on disk (cap {cap / 2**20:.0f} MiB; "
                        "torch.save never compresses, so this is not an ordinary weights file); "
                        "set RESNETLAB_MAX_UNPACKED=BYTES if you trust it")


def load_torch_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU after :func:`check_unpacked_size`.

    Opened as a file object: ``torch.load`` hands paths ending in ``.safetensors`` to the
    safetensors reader, and the content, not the name, decides here.  torch's own exceptions
    (``UnpicklingError`` for objects beyond tensors, ``RuntimeError`` for damage) pass through
    for the caller to word.
    """
    import torch

    check_unpacked_size(path)
    with open(path, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)
