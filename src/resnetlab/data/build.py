"""``build_data``: one call from a data set name to train/val/test batch loaders and the metadata
that lets prediction preprocess new inputs exactly like training did."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from resnetlab.data.augment import AugmentSpec, ImageTransform, channel_stats, parse_augment
from resnetlab.data.datasets import dataset_info, load_named
from resnetlab.data.folder import default_workers, memory_budget, open_folder
from resnetlab.data.loaders import BatchLoader, StreamSource, TensorSource
from resnetlab.data.readers.image_folder import (
    ALPHA_BACKGROUND,
    FolderIndex,
    convert_mode,
    fit_size,
    probe_images,
    scan_folder,
)
from resnetlab.data.readers.table import fit_schema, read_csv, target_codes
from resnetlab.data.splits import NAMED_VAL_SIZE, default_val_size, split_train_val
from resnetlab.utils.errors import ConfigError

__all__ = ["DataBundle", "BuildOptions", "build_data"]

log = logging.getLogger(__name__)
_VAL_FOLDERS = ("val", "valid", "validation")
_STATS_SAMPLE = 4096  # images decoded to estimate mean/std of a streamed folder (+-0.5% typical)


@dataclass
class DataBundle:
    """What ``build_data`` returns: loaders for each split plus JSON-serialisable ``meta``."""

    train: BatchLoader
    val: BatchLoader
    test: BatchLoader | None
    classes: list[str]
    meta: dict[str, Any]
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(F,)`` for tables."""
        return tuple(self.meta["input_shape"])


@dataclass
class BuildOptions:
    """The keyword arguments of :func:`build_data`, checked once."""

    data_dir: str | Path | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    val_size: int | None = None
    train_size: int | None = None
    seed: int = 0
    augment: str = "default"
    target: str | None = None
    val_dir: str | Path | None = None
    image_size: int | Sequence[int] | None = None
    in_chans: int | None = None
    device: torch.device | str = "cpu"
    channels_last: bool = True
    on_bad_image: str = "error"
    cache_dir: str | Path | None = None
    download: bool = True
    split_seed: int = 0
    num_workers: int | None = None
    in_memory: bool | None = None
    categorical: Sequence[str] = ()
    encoding: str = "onehot"

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.on_bad_image not in ("error", "skip"):
            raise ConfigError(f"on_bad_image={self.on_bad_image!r}: choose 'error' or 'skip'")
        for flag, value in (("--batch-size", self.batch_size),
                            ("--eval-batch-size", self.eval_batch_size)):
            if value < 1:
                raise ConfigError(f"{flag} {value}: must be at least 1")
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ConfigError(f"--image-size {self.image_size}: give one size or (height, width)")
        if self.in_chans not in (None, 1, 3):
            raise ConfigError(f"--in-chans {self.in_chans}: images convert to 1 (grey) or 3 (RGB)")


def _image_loaders(sources: dict[str, Any], spec: AugmentSpec, mean: list[float],
                   std: list[float], opts: BuildOptions) -> dict[str, BatchLoader]:
    transform = ImageTransform(spec, mean, std, device=opts.device,
                               channels_last=opts.channels_last)
    return {split: BatchLoader(src, batch_size=opts.batch_size if split == "train"
                               else opts.eval_batch_size, train=split == "train",
                               seed=opts.seed, transform=transform, name=split)
            for split, src in sources.items()}


def _image_meta(name: str, classes: list[str], shape: tuple[int, int, int], mean: list[float],
                std: list[float], spec: AugmentSpec, loaders: dict[str, BatchLoader],
                opts: BuildOptions, source: str) -> dict[str, Any]:
    return {
        "kind": "image", "name": name, "source": source, "classes": classes,
        "num_classes": len(classes), "input_shape": list(shape), "in_chans": shape[0],
        "image_size": list(shape[1:]), "mean": mean, "std": std,
        "resize": "cover, bilinear, centre crop", "alpha_background": ALPHA_BACKGROUND,
        "augment": str(spec), "channels_last": opts.channels_last,
        "split": _split_meta(loaders, opts),
    }


def _split_meta(loaders: dict[str, BatchLoader], opts: BuildOptions) -> dict[str, Any]:
    counts = {f"num_{split}": loader.num_samples for split, loader in loaders.items()}
    return {"split_seed": opts.split_seed, "val_size": opts.val_size,
            "train_size": opts.train_size, **counts}


def _adapt_images(x: np.ndarray, opts: BuildOptions) -> np.ndarray:
    """Convert channels/size of an in-memory data set with the same Pillow code that
    ``preprocess_inputs`` applies to files, so training and prediction match pixel for pixel."""
    chans = opts.in_chans or x.shape[1]
    size = tuple(opts.image_size or x.shape[2:])
    if (chans, size) == (x.shape[1], tuple(x.shape[2:])):
        return x
    out = np.empty((len(x), chans, *size), dtype=np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        arr = np.asarray(fit_size(convert_mode(pil, chans), size))
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return out


def _build_named(name: str, opts: BuildOptions) -> DataBundle:
    info = dataset_info(name)
    data = load_named(name, opts.data_dir, download_ok=opts.download)
    (x, y), (tx, ty) = data.train, data.test
    x, tx = _adapt_images(x, opts), _adapt_images(tx, opts)
    val_size = NAMED_VAL_SIZE if opts.val_size is None else opts.val_size
    train_rows, val_rows = split_train_val(y, val_size=val_size, train_size=opts.train_size,
                                           seed=opts.split_seed)
    mean, std = channel_stats(x[train_rows])
    spec = parse_augment(opts.augment, info.augment)

    def tensors(images: np.ndarray, labels: np.ndarray) -> TensorSource:
        return TensorSource(torch.from_numpy(images).to(opts.device),
                            torch.from_numpy(labels).to(opts.device))

    loaders = _image_loaders({"train": tensors(x[train_rows], y[train_rows]),
                              "val": tensors(x[val_rows], y[val_rows]),
                              "test": tensors(tx, ty)}, spec, mean, std, opts)
    meta = _image_meta(name, data.classes, x.shape[1:], mean, std, spec, loaders, opts,
                       str(data.folder))
    return DataBundle(loaders["train"], loaders["val"], loaders["test"], data.classes, meta)


def _folder_roots(root: Path, val_dir: str | Path | None) -> dict[str, Path]:
    """``root`` alone, or ``root/train`` + ``root/val|valid|validation`` + ``root/test``."""
    roots = {"train": root}
    splits = [root / v for v in _VAL_FOLDERS + ("test",) if (root / v).is_dir()]
    if (root / "train").is_dir() and splits:
        roots["train"] = root / "train"
        roots.update({("test" if p.name == "test" else "val"): p for p in reversed(splits)})
    if val_dir is not None:
        roots["val"] = Path(val_dir)
    return roots


def _folder_rows(labels: np.ndarray, good: np.ndarray, has_val: bool,
                 opts: BuildOptions) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation rows of the training folder (only readable files)."""
    if has_val:
        val_size = 0
    else:
        val_size = default_val_size(len(good)) if opts.val_size is None else opts.val_size
    train, val = split_train_val(labels[good], val_size=val_size, train_size=opts.train_size,
                                 seed=opts.split_seed)
    return good[train], good[val]


def _build_folder(path: str, opts: BuildOptions) -> DataBundle:
    roots = _folder_roots(Path(path).expanduser(), opts.val_dir)
    train_index = scan_folder(roots["train"])
    indexes: dict[str, FolderIndex] = {"train": train_index}
    for split in ("val", "test"):
        if split in roots:
            indexes[split] = scan_folder(roots[split], classes=train_index.classes)
    chans, size = probe_images(train_index.files)
    chans, size = opts.in_chans or chans, tuple(opts.image_size or size)
    num_files = sum(len(i) for i in indexes.values())
    in_memory = (opts.in_memory if opts.in_memory is not None
                 else num_files * chans * size[0] * size[1] <= memory_budget(opts.device))
    workers = default_workers(num_files) if opts.num_workers is None else opts.num_workers
    folders = {split: open_folder(index, chans, size, in_memory=in_memory,
                                  cache_dir=opts.cache_dir, on_bad_image=opts.on_bad_image,
                                  num_workers=workers) for split, index in indexes.items()}
    train_rows, val_rows = _folder_rows(train_index.labels, folders["train"].good_rows(),
                                        "val" in folders, opts)
    rows = {"train": train_rows, "val": val_rows}
    rows.update({s: folders[s].good_rows() for s in ("val", "test") if s in folders})
    sample = folders["train"].sample(rows["train"], len(rows["train"]) if in_memory
                                     else _STATS_SAMPLE, opts.split_seed)
    mean, std = channel_stats(sample)
    # validation rows come from the training folder unless a validation folder exists
    owner = {"train": "train", "val": "val" if "val" in folders else "train", "test": "test"}
    sources = {split: folders[owner[split]].source(r, device=opts.device, num_workers=workers,
                                                   on_bad_image=opts.on_bad_image)
               for split, r in rows.items()}
    return _folder_bundle(path, train_index.classes, (chans, *size), mean, std, sources,
                          folders, opts)


def _folder_bundle(path: str, classes: list[str], shape: tuple[int, int, int],
                   mean: list[float], std: list[float], sources: dict[str, Any],
                   folders: dict[str, Any], opts: BuildOptions) -> DataBundle:
    spec = parse_augment(opts.augment, f"crop:{max(1, shape[1] // 8)},flip")
    loaders = _image_loaders(sources, spec, mean, std, opts)
    meta = _image_meta(f"folder:{path}", classes, shape, mean, std, spec, loaders, opts, path)
    skipped = [msg for f in folders.values() for msg in f.bad.values()]
    meta["skipped"] = len(skipped)
    meta["streamed"] = any(isinstance(s, StreamSource) for s in sources.values())
    if skipped:
        log.warning("skipped %d unreadable image(s); first: %s", len(skipped), skipped[0])
    return DataBundle(loaders["train"], loaders["val"], loaders.get("test"), classes, meta,
                      skipped)


def _build_table(path: str, opts: BuildOptions) -> DataBundle:
    table = read_csv(Path(path).expanduser())
    codes = target_codes(table, opts.target)
    val_table = read_csv(Path(opts.val_dir).expanduser()) if opts.val_dir else None
    val_size = 0 if val_table else (default_val_size(len(codes)) if opts.val_size is None
                                    else opts.val_size)
    train_rows, val_rows = split_train_val(codes, val_size=val_size,
                                           train_size=opts.train_size, seed=opts.split_seed)
    schema = fit_schema(table, opts.target, train_rows, categorical=tuple(opts.categorical),
                        encoding=opts.encoding)
    if parse_augment(opts.augment, "none"):
        raise ConfigError(f"--augment {opts.augment}: augmentation applies to images; "
                          "use --augment none (or default) for csv data")
    x, y = schema.features(table), schema.labels(table)
    if val_table is not None:
        vx, vy = schema.features(val_table), schema.labels(val_table)
    else:
        vx, vy = x[val_rows], y[val_rows]

    def loader(xs: np.ndarray, ys: np.ndarray, split: str) -> BatchLoader:
        source = TensorSource(torch.from_numpy(xs).to(opts.device),
                              torch.from_numpy(ys).to(opts.device))
        return BatchLoader(source, batch_size=opts.batch_size if split == "train"
                           else opts.eval_batch_size, train=split == "train", seed=opts.seed,
                           name=split)

    loaders = {"train": loader(x[train_rows], y[train_rows], "train"), "val": loader(vx, vy, "val")}
    meta = {"kind": "table", "name": f"csv:{path}", "source": path, "classes": schema.classes,
            "num_classes": len(schema.classes), "input_shape": [x.shape[1]],
            "table": schema.to_meta(), "augment": "none", "split": _split_meta(loaders, opts)}
    return DataBundle(loaders["train"], loaders["val"], None, schema.classes, meta)


def build_data(
    name: str, *, data_dir: str | Path | None = None, batch_size: int = 128,
    eval_batch_size: int = 512, val_size: int | None = None, train_size: int | None = None,
    seed: int = 0, augment: str = "default", target: str | None = None,
    val_dir: str | Path | None = None, image_size: int | Sequence[int] | None = None,
    in_chans: int | None = None, device: torch.device | str = "cpu",
    channels_last: bool = True, on_bad_image: str = "error", cache_dir: str | Path | None = None,
    download: bool = True, split_seed: int = 0, num_workers: int | None = None,
    in_memory: bool | None = None, categorical: Sequence[str] = (), encoding: str = "onehot",
) -> DataBundle:
    """Train/val/test loaders for a named data set, ``folder:PATH`` or ``csv:PATH``.

    ``name``: ``fashion-mnist``, ``mnist``, ``kmnist``, ``cifar10``, ``cifar100`` (found via
    ``data_dir``, ``$RESNETLAB_DATA``, the Debian package, or downloaded unless ``download=False``),
    ``folder:PATH`` (``PATH/<class>/<image>``, or ``PATH/train`` + ``PATH/val`` [+ ``PATH/test``])
    or ``csv:PATH`` with ``target``.  ``val_size`` defaults to 5000 for named sets and 10% (at
    most 5000) otherwise; the hold-out and the stratified ``train_size`` subset are fixed by
    ``split_seed``, so runs with different ``seed`` (order, augmentation) score the same images.
    ``augment``: ``default``, ``none`` or e.g. ``crop:4,flip,erase:0.25``.  Folders:
    ``image_size``/``in_chans`` default from the images, ``on_bad_image="skip"`` skips unreadable
    files, ``cache_dir`` keeps the decoded array, ``in_memory=None`` streams folders larger than a
    quarter of RAM.  CSV: ``categorical`` forces columns to categories, ``encoding`` is
    ``onehot`` or ``embed``.
    """
    opts = BuildOptions(data_dir, batch_size, eval_batch_size, val_size, train_size, seed,
                        augment, target, val_dir, image_size, in_chans, device, channels_last,
                        on_bad_image, cache_dir, download, split_seed, num_workers, in_memory,
                        categorical, encoding)
    kind = name.split(":", 1)[0] if ":" in name else "named"
    _check_applicable(kind, opts)
    if kind == "csv":
        return _build_table(name[4:], opts)
    if kind == "folder":
        return _build_folder(name[7:], opts)
    return _build_named(name, opts)


def _check_applicable(kind: str, opts: BuildOptions) -> None:
    """Refuse options that the kind of data would silently ignore."""
    ignored = {"csv": [("--image-size", opts.image_size), ("--in-chans", opts.in_chans)],
               "folder": [("--target", opts.target)],
               "named": [("--target", opts.target), ("--val-dir", opts.val_dir)]}
    if kind not in ignored:
        raise ConfigError(f"data prefix {kind + ':'!r} is unknown; use folder:PATH, csv:PATH or "
                          "a name such as fashion-mnist")
    what = {"csv": "csv: tables", "folder": "folder: images", "named": "named data sets"}[kind]
    for flag, value in ignored[kind]:
        if value is not None:
            raise ConfigError(f"{flag} does not apply to {what}; drop it")
