"""Image folders as data sets: decoded once into memory, or streamed when they are too large.

Decoding (Pillow) runs in DataLoader worker processes, a batch of files per task.  With a
``cache_dir`` the decoded, resized uint8 array is written to ``<cache_dir>/<folder>-<key>.npy``
(plain NumPy format, read with ``allow_pickle=False``); the key hashes every file's path, size and
modification time plus the target size and channels, so an edited folder is decoded afresh.  A
folder too large for memory then trains from the memory-mapped cache instead of decoding again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from resnetlab.data.loaders import ArrayBatches, StreamSource, TensorSource
from resnetlab.data.readers.image_folder import FolderBatches, FolderIndex
from resnetlab.utils.errors import DataError

__all__ = ["FolderData", "open_folder", "default_workers", "memory_budget"]

_CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
_CHUNK = 256  # files per decoding task


def default_workers(num_files: int) -> int:
    """Worker processes for decoding: none for small folders (start-up costs more than it saves)."""
    return 0 if num_files < 512 else min(8, os.cpu_count() or 1)


def memory_budget(device: torch.device) -> int:
    """Bytes of decoded images we keep in memory: a quarter of RAM (and of GPU memory)."""
    try:
        budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        budget = 2 << 30
    if device.type == "cuda":
        budget = min(budget, torch.cuda.get_device_properties(device).total_memory // 4)
    return budget


def _raise_bad(message: str) -> None:
    raise DataError(f"{message}; fix or delete the file, or pass on_bad_image='skip'")


def decode_folder(index: FolderIndex, in_chans: int, size: tuple[int, int], out: np.ndarray, *,
                  on_bad_image: str = "error", num_workers: int = 0) -> dict[int, str]:
    """Decode every file of ``index`` into ``out[i]``; returns ``{row: error}`` of bad files."""
    dataset = FolderBatches(index, in_chans, size)
    chunks = [list(range(i, min(i + _CHUNK, len(index)))) for i in range(0, len(index), _CHUNK)]
    loader = torch.utils.data.DataLoader(dataset, sampler=chunks, batch_size=None,
                                         num_workers=num_workers)
    bad: dict[int, str] = {}
    for chunk, (x, _, errors) in zip(chunks, loader, strict=True):
        if errors and on_bad_image == "error":
            _raise_bad(errors[0][1])
        bad.update(errors)
        out[[i for i in chunk if i not in bad]] = x.numpy()
    return bad


def _cache_key(index: FolderIndex, in_chans: int, size: tuple[int, int]) -> str:
    digest = hashlib.sha256(json.dumps(
        [_CACHE_VERSION, str(index.root.resolve()), index.classes, in_chans, list(size)]).encode())
    for path in index.files:
        st = path.stat()
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _write_cache(index: FolderIndex, in_chans: int, size: tuple[int, int], path: Path,
                 **decode_args) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        out = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8,
                                        shape=(len(index), in_chans, *size))
        bad = decode_folder(index, in_chans, size, out, **decode_args)
        out.flush()
        del out
        path.with_suffix(".json").write_text(json.dumps(
            {"root": str(index.root), "files": len(index), "bad": bad}))
        os.replace(part, path)  # atomic: a crash never leaves a half-written cache behind
    finally:
        part.unlink(missing_ok=True)


def _read_cache(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, dict[int, str]] | None:
    try:
        info = json.loads(path.with_suffix(".json").read_text())
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if array.shape != shape or array.dtype != np.uint8:
        return None
    return array, {int(k): v for k, v in info["bad"].items()}


@dataclass
class FolderData:
    """One image folder, decoded (``array`` in memory or memory-mapped) or to be streamed.

    ``bad`` maps rows of unreadable files to their errors (only with ``on_bad_image="skip"``).
    """

    index: FolderIndex
    in_chans: int
    size: tuple[int, int]
    array: np.ndarray | None = None
    cache_path: Path | None = None
    bad: dict[int, str] = field(default_factory=dict)

    def good_rows(self) -> np.ndarray:
        """Rows of the files that decoded (all rows when streaming: bad files show up later)."""
        return np.setdiff1d(np.arange(len(self.index)), list(self.bad))

    def source(self, rows: np.ndarray, *, device: torch.device, num_workers: int,
               on_bad_image: str) -> TensorSource | StreamSource:
        """The samples at ``rows``: sliced in memory, or streamed from the cache or the files."""
        labels = self.index.labels[rows]
        if self.array is not None and not isinstance(self.array, np.memmap):
            return TensorSource(torch.from_numpy(self.array[rows]).to(device),
                                torch.from_numpy(labels).to(device))
        if self.array is not None:
            dataset = ArrayBatches(str(self.cache_path), rows, labels)
        else:
            dataset = FolderBatches(self.index.subset(rows), self.in_chans, self.size)
        return StreamSource(dataset, device=device, num_workers=num_workers,
                            on_bad_image=on_bad_image)

    def sample(self, rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
        """Up to ``limit`` decoded images from ``rows`` (seeded choice), e.g. for mean/std."""
        if self.array is not None and len(rows) <= limit:
            return np.asarray(self.array[np.sort(rows)])
        pick = np.sort(np.random.default_rng(seed).choice(rows, min(limit, len(rows)), replace=False))
        if self.array is not None:
            return np.asarray(self.array[pick])
        x, _, _ = FolderBatches(self.index, self.in_chans, self.size)[pick.tolist()]
        return x.numpy()


def open_folder(index: FolderIndex, in_chans: int, size: tuple[int, int], *, in_memory: bool,
                cache_dir: str | Path | None, on_bad_image: str, num_workers: int) -> FolderData:
    """Decode ``index`` into memory, reuse or write the disk cache, or leave it to streaming."""
    data = FolderData(index, in_chans, size)
    args = {"on_bad_image": on_bad_image, "num_workers": num_workers}
    shape = (len(index), in_chans, *size)
    if cache_dir is not None:
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in index.root.name)
        data.cache_path = Path(cache_dir).expanduser() / f"{name}-{_cache_key(index, in_chans, size)}.npy"
        cached = _read_cache(data.cache_path, shape)
        if cached is None:
            _write_cache(index, in_chans, size, data.cache_path, **args)
            cached = _read_cache(data.cache_path, shape)
            assert cached is not None
        data.array, data.bad = cached
        if data.bad and on_bad_image == "error":
            _raise_bad(next(iter(data.bad.values())))
        if in_memory:
            data.array = np.array(data.array)  # read the whole file once
    elif in_memory:
        data.array = np.empty(shape, dtype=np.uint8)
        data.bad = decode_folder(index, in_chans, size, data.array, **args)
    return data
