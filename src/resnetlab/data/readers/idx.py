"""IDX files: the format of MNIST, Fashion-MNIST and KMNIST, gzipped or raw.

Layout (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte, a byte with
the number of dimensions, then one big-endian uint32 per dimension, then the data in C order.
Images are magic 2051 (``00 00 08 03``: uint8, 3-D) and labels magic 2049 (``00 00 08 01``).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from resnetlab.utils.errors import DataError

__all__ = ["read_idx", "read_idx_pair", "check_labels", "IMAGES_MAGIC", "LABELS_MAGIC"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
# type byte -> big-endian dtype, as listed on the MNIST page
_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=fh) as gz:
                    return gz.read()
            return fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: corrupt or truncated gzip data ({err}); fetch the file again") from None


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """Read one IDX file into a writable native-endian array.

    ``magic`` (e.g. :data:`IMAGES_MAGIC`) makes a file of another type or rank an error.  The
    byte count must match the header exactly: a truncated or padded file is refused, never
    reshaped into shifted images.
    """
    path = Path(path)
    data = _read_bytes(path)
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found is None or data[0] or data[1] or data[2] not in _TYPES:
        raise DataError(f"{path}: not an IDX file (magic {data[:4].hex() or 'missing'}; "
                        "expected 00 00 <type> <ndim>)")
    if magic is not None and found != magic:
        raise DataError(f"{path}: wrong magic number {found} (expected {magic}: "
                        f"{'images' if magic == IMAGES_MAGIC else 'labels'} file); "
                        "are the image and label files swapped?")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_TYPES[data[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: header says shape {dims} ({expected} bytes) but the file holds "
                        f"{len(data)} bytes; it is truncated or corrupt, fetch it again")
    array = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx_pair(
    images: str | Path, labels: str | Path, *, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` int64 from an IDX image/label file pair.

    Checks both magic numbers, that the counts agree, and (with ``num_classes``) that every
    label is in ``0..num_classes-1``; errors name the file and the first bad index.
    """
    x = read_idx(images, magic=IMAGES_MAGIC)
    y = read_idx(labels, magic=LABELS_MAGIC)
    if x.dtype != np.uint8 or y.dtype != np.uint8:
        raise DataError(f"{images if x.dtype != np.uint8 else labels}: expected uint8 data "
                        f"(type byte 0x08), found {x.dtype if x.dtype != np.uint8 else y.dtype}")
    if len(x) != len(y):
        raise DataError(f"{images}: {len(x)} images but {labels} has {len(y)} labels; "
                        "the pair must come from the same split")
    if len(x) == 0:
        raise DataError(f"{images}: empty data set (0 images)")
    y = y.astype(np.int64)
    if num_classes is not None:
        check_labels(y, num_classes, labels)
    return x, y


def check_labels(y: np.ndarray, num_classes: int, source: str | Path) -> None:
    """Raise ``DataError`` naming ``source`` and the first index whose label is out of range."""
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{source}: label {int(y[i])} at index {i} is outside 0..{num_classes - 1} "
                        f"({bad.size} such labels)")
