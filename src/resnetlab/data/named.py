"""Named data sets (Fashion-MNIST, MNIST, KMNIST, CIFAR-10/100) as a :class:`DataBundle`.

Their published train/test split is kept; the validation hold-out comes from the training
split (5000 images by default, as in He et al. 2016, sec. 4.2).  Finding and reading the files
is :mod:`resnetlab.data.datasets`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from resnetlab.data.augment import channel_stats, parse_augment
from resnetlab.data.bundle import DataBundle, RunSide, image_loaders, image_meta, split_meta
from resnetlab.data.datasets import dataset_info, load_named
from resnetlab.data.loaders import TensorSource
from resnetlab.data.readers.image import convert_mode, fit_size
from resnetlab.data.splits import resolve_val_size, split_train_val

__all__ = ["build_named"]


def _adapt_images(x: np.ndarray, in_chans: int | None,
                  image_size: tuple[int, int] | None) -> np.ndarray:
    """Convert channels/size of an in-memory data set with the same Pillow code that
    ``preprocess_inputs`` applies to files, so training and prediction match pixel for pixel."""
    chans = in_chans or x.shape[1]
    size = tuple(image_size or x.shape[2:])
    if (chans, size) == (x.shape[1], tuple(x.shape[2:])):
        return x
    out = np.empty((len(x), chans, *size), dtype=np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        arr = np.asarray(fit_size(convert_mode(pil, chans), size))
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return out


def build_named(data_cfg: Any, run: RunSide, image_size: tuple[int, int] | None,
                augment: str) -> DataBundle:
    """Bundle of a named data set; ``augment`` ``"auto"`` is the data set's own recipe."""
    name = data_cfg.name
    info = dataset_info(name)
    data = load_named(name, data_cfg.data_dir, download_ok=data_cfg.download)
    (x, y), (tx, ty) = data.train, data.test
    x, tx = (_adapt_images(a, run.in_chans, image_size) for a in (x, tx))
    val_size, val_source = resolve_val_size(data_cfg.val_size, y, named=True)
    train_rows, val_rows = split_train_val(y, val_size=val_size, train_size=data_cfg.train_size,
                                           seed=data_cfg.split_seed)
    mean, std = channel_stats(x[train_rows])
    spec = parse_augment(augment, info.augment)

    def tensors(images: np.ndarray, labels: np.ndarray) -> TensorSource:
        return TensorSource(torch.from_numpy(images).to(run.device),
                            torch.from_numpy(labels).to(run.device))

    loaders = image_loaders({"train": tensors(x[train_rows], y[train_rows]),
                             "val": tensors(x[val_rows], y[val_rows]),
                             "test": tensors(tx, ty)}, spec, mean, std, data_cfg, run)
    meta = image_meta(name, str(data.folder), data.classes, x.shape[1:], (mean, std), spec,
                      split_meta(loaders, data_cfg, val_source), run)
    return DataBundle(loaders["train"], loaders["val"], loaders["test"], data.classes, meta)
