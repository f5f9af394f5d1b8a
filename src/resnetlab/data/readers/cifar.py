"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html).

Binary version: fixed-size records, ``<label byte(s)><1024 R><1024 G><1024 B>`` (32x32, row major);
CIFAR-100 records carry a coarse then a fine label byte.  Python version: pickled dicts.  Those are
read with :class:`RestrictedUnpickler`, which resolves only the handful of NumPy names such a file
needs; anything else (``os.system``, ``builtins.eval``, ...) is refused before it is called.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from resnetlab.data.readers.idx import check_labels
from resnetlab.utils.errors import DataError

__all__ = ["RestrictedUnpickler", "read_cifar_binary", "read_cifar_python", "load_cifar",
           "CIFAR_LAYOUTS"]

_PIXELS = 3 * 32 * 32

# Directory layouts as the official archives extract them.
CIFAR_LAYOUTS: dict[int, dict[str, dict[str, Any]]] = {
    10: {
        "binary": {"dir": "cifar-10-batches-bin", "test": ["test_batch.bin"],
                   "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                   "names": "batches.meta.txt", "label_bytes": 1},
        "python": {"dir": "cifar-10-batches-py", "test": ["test_batch"],
                   "train": [f"data_batch_{i}" for i in range(1, 6)],
                   "names": "batches.meta", "labels_key": "labels", "names_key": "label_names"},
    },
    100: {
        "binary": {"dir": "cifar-100-binary", "test": ["test.bin"], "train": ["train.bin"],
                   "names": "fine_label_names.txt", "label_bytes": 2},
        "python": {"dir": "cifar-100-python", "test": ["test"], "train": ["train"],
                   "names": "meta", "labels_key": "fine_labels", "names_key": "fine_label_names"},
    },
}


def read_cifar_binary(
    path: str | Path, *, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 from one binary batch file.

    For CIFAR-100 (``num_classes=100``) the fine label (second byte) is used.
    """
    path = Path(path)
    label_bytes = CIFAR_LAYOUTS[num_classes]["binary"]["label_bytes"]
    record = label_bytes + _PIXELS
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    if raw.size == 0 or raw.size % record:
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of {record}-byte "
                        f"CIFAR-{num_classes} records; the file is truncated or not a CIFAR batch")
    rows = raw.reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)
    check_labels(labels, num_classes, path)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), labels


def _safe_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:  # object arrays would unpickle arbitrary Python objects
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dtype


def _safe_frombuffer(buf: Any, dtype: Any, shape: tuple, order: str) -> np.ndarray:
    # protocol-5 pickles of contiguous arrays (Python >= 3.8 with protocol=5)
    return np.frombuffer(buf, dtype=_safe_dtype(dtype)).reshape(shape, order=order)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 writes bytes at protocol <= 2 as _codecs.encode(str, "latin1")
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return text.encode("latin1")


_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR python batches: dicts, lists, str/bytes, numbers and NumPy arrays.

    Every global a pickle names goes through :meth:`find_class`, which returns only the NumPy
    array constructors listed in ``_ALLOWED`` (object dtypes refused).  A ``__reduce__`` payload
    therefore fails at lookup time, before anything is called.
    """

    def __init__(self, file: io.BufferedIOBase, path: Path):
        super().__init__(file, encoding="bytes")  # CIFAR was pickled by Python 2
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global named by the pickle: allowed NumPy constructors only."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path}: refused to unpickle {module}.{name}; a CIFAR python batch holds "
                "only dicts, lists, bytes and numpy arrays (use the binary version if unsure)"
            ) from None


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            obj = RestrictedUnpickler(fh, path).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a CIFAR python batch ({err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_python(
    path: str | Path, *, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 from one python-version batch."""
    path = Path(path)
    batch = _load_pickle(path)
    key = CIFAR_LAYOUTS[num_classes]["python"]["labels_key"]
    if "data" not in batch or key not in batch:
        raise DataError(f"{path}: missing 'data' or '{key}' (keys: {sorted(map(str, batch))}); "
                        f"is this a CIFAR-{num_classes} batch?")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: {labels.size} labels for {len(data)} images")
    labels = labels.astype(np.int64)
    check_labels(labels, num_classes, path)
    return data.reshape(-1, 3, 32, 32).copy(), labels


def _class_names(folder: Path, version: str, num_classes: int) -> list[str] | None:
    layout = CIFAR_LAYOUTS[num_classes][version]
    path = folder / layout["names"]
    if not path.is_file():
        return None
    if version == "binary":
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in _load_pickle(path).get(layout["names_key"], [])]
    names = [n for n in names if n]
    return names if len(names) == num_classes else None


def find_cifar_folder(root: Path, num_classes: int) -> tuple[Path, str] | None:
    """The extracted batch folder under (or at) ``root`` and its version, binary preferred."""
    for version in ("binary", "python"):
        layout = CIFAR_LAYOUTS[num_classes][version]
        for folder in (root / layout["dir"], root):
            if all((folder / f).is_file() for f in layout["train"] + layout["test"]):
                return folder, version
    return None


def load_cifar(root: str | Path, num_classes: int = 10) -> dict[str, Any]:
    """Load a CIFAR-10/100 folder: ``{"train": (x, y), "test": (x, y), "classes": [...] | None}``.

    ``root`` is the extracted batch folder or its parent; the binary version is preferred when
    both are present because it involves no unpickling at all.
    """
    found = find_cifar_folder(Path(root), num_classes)
    if found is None:
        raise DataError(f"{root}: no CIFAR-{num_classes} batches "
                        f"({CIFAR_LAYOUTS[num_classes]['binary']['dir']}/ or "
                        f"{CIFAR_LAYOUTS[num_classes]['python']['dir']}/)")
    folder, version = found
    layout = CIFAR_LAYOUTS[num_classes][version]
    reader = read_cifar_binary if version == "binary" else read_cifar_python
    out: dict[str, Any] = {"classes": _class_names(folder, version, num_classes)}
    for split in ("train", "test"):
        parts = [reader(folder / f, num_classes=num_classes) for f in layout[split]]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out
