"""Image folders as data: ``root/<class>/<image>`` (torchvision's ImageFolder layout), or
``root/train`` + ``root/val|valid|validation`` [+ ``root/test``].

Scanning follows symbolic links but never into a folder it has already seen, so a class folder
that links back to the root (or a link cycle) cannot count images twice under a new label; class
names that are not valid UTF-8 are shown with U+FFFD so every report can print them.  Folders
are decoded once into memory, or streamed when they are too large.  Decoding (Pillow) runs in
DataLoader worker processes, a batch of files per task.  With a ``cache_dir`` the decoded,
resized uint8 array is written to ``<cache_dir>/<folder>-<key>.npy`` (plain NumPy format, read
with ``allow_pickle=False``); the key hashes every file's path, size and modification time plus
the target size and channels, so an edited folder is decoded afresh.  A folder too large for
memory then trains from the memory-mapped cache instead of decoding again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnetlab.data.augment import channel_stats, parse_augment
from resnetlab.data.bundle import (
    DataBundle,
    RunSide,
    check_single_class,
    image_loaders,
    image_meta,
    split_meta,
)
from resnetlab.data.loaders import ArrayBatches, StreamSource, TensorSource
from resnetlab.data.readers.image import IMAGE_EXTENSIONS, decode_image, probe_images
from resnetlab.data.splits import resolve_val_size, split_train_val
from resnetlab.utils.errors import DataError, storage_error

__all__ = ["FolderIndex", "FolderBatches", "FolderData", "scan_folder", "image_files",
           "open_folder", "default_workers", "memory_budget", "build_folder"]

log = logging.getLogger(__name__)
_VAL_FOLDERS = ("val", "valid", "validation")
_STATS_SAMPLE = 4096  # images decoded to estimate mean/std of a streamed folder (+-0.5% typical)


@dataclass
class FolderIndex:
    """The files of an image folder: ``files[i]`` has label ``labels[i]`` (index into classes)."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, rows: np.ndarray) -> FolderIndex:
        """The files at ``rows`` (same root and classes)."""
        return FolderIndex(self.root, self.classes, [self.files[i] for i in rows], self.labels[rows])


def image_files(folder: Path, seen: set[str] | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively, following links), sorted; hidden files such as
    macOS ``._x.png`` resource forks are left out.  A folder whose real path is in ``seen`` (or
    was walked already) is skipped with a warning: that is how a link cycle would repeat files."""
    seen = set() if seen is None else seen
    found: list[Path] = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        seen.add(os.path.realpath(top))
        for name in list(dirs):
            if os.path.realpath(os.path.join(top, name)) in seen:
                log.warning("%s: skipped, a link to a folder already read (a link cycle would "
                            "count its images twice)", os.path.join(top, name))
                dirs.remove(name)
        found += [Path(top, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)
                  and not f.startswith(".") and os.path.isfile(os.path.join(top, f))]
    return sorted(found)


def _display_name(name: str) -> str:
    """A folder name as text every report can print: undecodable bytes become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _class_folders(root: Path) -> dict[str, Path]:
    """``{class name: folder}`` of ``root``; a folder linking to the root or above it, or to
    another class's folder, is skipped with a warning (it would relabel the same images)."""
    real_root = root.resolve()
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    real = {d: d.resolve() for d in dirs}
    out: dict[str, Path] = {}
    for d in sorted(dirs, key=lambda d: (d.is_symlink(), d.name)):  # real folders win
        taken = [real[c] for c in out.values()]
        if real_root.is_relative_to(real[d]) or any(
                real[d].is_relative_to(t) or t.is_relative_to(real[d]) for t in taken):
            log.warning("%s: skipped, it links to %s, whose images are already read under "
                        "another label", d, real[d])
            continue
        name = _display_name(d.name)
        if name in out:
            raise DataError(f"{root}: class folders {out[name].name!r} and {d.name!r} have the "
                            "same name once undecodable bytes are replaced; rename one")
        out[name] = d
    return dict(sorted(out.items()))


def scan_folder(root: str | Path, *, classes: list[str] | None = None) -> FolderIndex:
    """List ``root/<class>/**/<image>``; class names are the sorted sub-folder names.

    ``classes`` (the training classes) makes a folder whose classes differ an error, so a
    validation folder can never silently shift label indices.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected root/<class>/<image> folders)")
    folders = _class_folders(root)
    if not folders:
        raise DataError(f"{root}: no class folders; expected root/<class>/<image>.png|.jpg|...")
    found = list(folders)
    if classes is not None and found != list(classes):
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        raise DataError(f"{root}: classes differ from the training folder (missing {missing}, "
                        f"extra {extra}); both folders need the same class sub-folders")
    files: list[Path] = []
    labels: list[int] = []
    seen = {str(p.resolve()) for p in folders.values()}
    for label, folder in enumerate(folders.values()):
        members = image_files(folder, seen - {str(folder.resolve())})
        if not members:
            raise DataError(f"{folder}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} "
                            "files); add images or remove the folder")
        files += members
        labels += [label] * len(members)
    return FolderIndex(root, found, files, np.asarray(labels, dtype=np.int64))


class FolderBatches(torch.utils.data.Dataset):
    """A map-style data set whose items are whole batches: ``ds[[i, j, ...]]`` decodes those
    files and returns ``(x uint8 (n, C, H, W), y int64 (n,), bad)`` where ``bad`` lists
    ``(i, error)`` for files that could not be read (left out of ``x`` and ``y``).  Used with
    ``batch_size=None`` so DataLoader workers decode whole batches in parallel.
    """

    def __init__(self, index: FolderIndex, in_chans: int, size: tuple[int, int]):
        self.index, self.in_chans, self.size = index, in_chans, size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, indices: list[int]
                    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
        images, keep, bad = [], [], []
        for i in indices:
            try:
                images.append(decode_image(self.index.files[i], self.in_chans, self.size))
                keep.append(i)
            except DataError as err:
                bad.append((i, str(err)))
        x = (torch.from_numpy(np.stack(images)) if images
             else torch.empty((0, self.in_chans, *self.size), dtype=torch.uint8))
        return x, torch.from_numpy(self.index.labels[keep]), bad


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
    raise DataError(f"{message}; fix or delete the file, or pass --on-bad-image skip")


def decode_folder(index: FolderIndex, in_chans: int, size: tuple[int, int], out: np.ndarray, *,
                  on_bad_image: str, num_workers: int = 0) -> dict[int, str]:
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
    part = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8,
                                        shape=(len(index), in_chans, *size))
        bad = decode_folder(index, in_chans, size, out, **decode_args)
        out.flush()
        del out
        path.with_suffix(".json").write_text(json.dumps(
            {"root": str(index.root), "files": len(index), "bad": bad}))
        os.replace(part, path)  # atomic: a crash never leaves a half-written cache behind
    except OSError as err:  # a file named like the folder, a read-only or full disk
        raise storage_error(err, path.parent, "writing the decoded-image cache", "--cache-dir") from None
    finally:
        with contextlib.suppress(OSError):
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


def _folder_roots(root: Path, val_dir: str | Path | None) -> dict[str, Path]:
    """``root`` alone, or ``root/train`` + ``root/val|valid|validation`` + ``root/test``."""
    roots = {"train": root}
    splits = [root / v for v in _VAL_FOLDERS + ("test",) if (root / v).is_dir()]
    if (root / "train").is_dir() and splits:
        roots["train"] = root / "train"
        roots.update({("test" if p.name == "test" else "val"): p for p in reversed(splits)})
    if val_dir is not None:
        roots["val"] = Path(val_dir).expanduser()
    return roots


def _open_splits(roots: dict[str, Path], data_cfg: Any, run: RunSide,
                 image_size: tuple[int, int] | None) -> tuple[dict[str, FolderData], int, bool]:
    """Scan and open (decode or prepare to stream) each split's folder."""
    train_index = scan_folder(roots["train"])
    indexes = {"train": train_index}
    for split in ("val", "test"):
        if split in roots:
            indexes[split] = scan_folder(roots[split], classes=train_index.classes)
    chans, size = probe_images(train_index.files)
    chans, size = run.in_chans or chans, tuple(image_size or size)
    num_files = sum(len(i) for i in indexes.values())
    in_memory = (data_cfg.in_memory if data_cfg.in_memory is not None
                 else num_files * chans * size[0] * size[1] <= memory_budget(run.device))
    workers = (default_workers(num_files) if data_cfg.num_workers is None
               else data_cfg.num_workers)
    folders = {split: open_folder(index, chans, size, in_memory=in_memory,
                                  cache_dir=data_cfg.cache_dir,
                                  on_bad_image=data_cfg.on_bad_image, num_workers=workers)
               for split, index in indexes.items()}
    return folders, workers, in_memory


def _split_rows(folders: dict[str, FolderData], data_cfg: Any) -> tuple[dict[str, np.ndarray], str]:
    """Rows of each split (readable files only) and how the validation size was chosen."""
    train = folders["train"]
    good = train.good_rows()
    if "val" in folders:
        val_size, val_source = 0, f"folder {folders['val'].index.root}"
    else:
        val_size, val_source = resolve_val_size(data_cfg.val_size, train.index.labels[good])
    train_rows, val_rows = split_train_val(train.index.labels[good], val_size=val_size,
                                           train_size=data_cfg.train_size,
                                           seed=data_cfg.split_seed)
    rows = {"train": good[train_rows], "val": good[val_rows]}
    rows.update({s: folders[s].good_rows() for s in ("val", "test") if s in folders})
    return rows, val_source


def build_folder(path: str, data_cfg: Any, run: RunSide, image_size: tuple[int, int] | None,
                 augment: str) -> DataBundle:
    """Bundle of ``folder:PATH``; ``augment`` ``"auto"`` adds nothing (a flip or crop is a
    property of the data, which only the user knows: text and digits must not be mirrored)."""
    roots = _folder_roots(Path(path).expanduser(), data_cfg.val_dir)
    folders, workers, in_memory = _open_splits(roots, data_cfg, run, image_size)
    index = folders["train"].index
    check_single_class(f"folder:{path}", index.classes, data_cfg.allow_single_class)
    rows, val_source = _split_rows(folders, data_cfg)
    sample = folders["train"].sample(rows["train"], len(rows["train"]) if in_memory
                                     else _STATS_SAMPLE, data_cfg.split_seed)
    mean, std = channel_stats(sample)
    # validation rows come from the training folder unless a validation folder exists
    owner = {"train": "train", "val": "val" if "val" in folders else "train", "test": "test"}
    sources = {split: folders[owner[split]].source(r, device=run.device, num_workers=workers,
                                                   on_bad_image=data_cfg.on_bad_image)
               for split, r in rows.items()}
    spec = parse_augment(augment, "none")
    loaders = image_loaders(sources, spec, mean, std, data_cfg, run)
    shape = (folders["train"].in_chans, *folders["train"].size)
    meta = image_meta(f"folder:{path}", path, index.classes, shape, (mean, std), spec,
                      split_meta(loaders, data_cfg, val_source), run)
    skipped = [msg for f in folders.values() for msg in f.bad.values()]
    meta["skipped"] = len(skipped)
    meta["streamed"] = any(isinstance(s, StreamSource) for s in sources.values())
    if skipped:
        log.warning("skipped %d unreadable image(s) (--on-bad-image skip); first: %s",
                    len(skipped), skipped[0])
    return DataBundle(loaders["train"], loaders["val"], loaders.get("test"), index.classes,
                      meta, skipped)
