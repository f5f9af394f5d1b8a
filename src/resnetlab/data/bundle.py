"""What ``build_data`` returns, and the pieces every kind of data assembles it from."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from resnetlab.data.augment import AugmentSpec, ImageTransform
from resnetlab.data.loaders import BatchLoader, StreamSource, TensorSource
from resnetlab.data.readers.image import ALPHA_BACKGROUND
from resnetlab.utils.errors import DataError

__all__ = ["DataBundle", "RunSide", "split_meta", "image_loaders", "image_meta", "loader",
           "check_single_class"]

log = logging.getLogger("resnetlab.data")


@dataclass
class DataBundle:
    """What ``build_data`` returns: loaders for each split plus JSON-serialisable ``meta``.

    ``meta["split"]`` states the split that was used: ``{"train": n, "val": n, "test": n or
    None, "val_source": "fraction 0.1 of 5200", ...}``.
    """

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


@dataclass(frozen=True)
class RunSide:
    """What the run decides rather than the data section: seed, device, memory layout and the
    channels the model reads (``None``: the data's own)."""

    seed: int
    device: torch.device
    channels_last: bool
    in_chans: int | None


def loader(source: TensorSource | StreamSource, split: str, data_cfg: Any, run: RunSide,
           transform: Any = None) -> BatchLoader:
    """The loader of one split: training batches shuffle, evaluation batches keep order."""
    train = split == "train"
    return BatchLoader(source, batch_size=data_cfg.batch_size if train
                       else data_cfg.eval_batch_size, train=train, seed=run.seed,
                       transform=transform, name=split)


def image_loaders(sources: dict[str, Any], spec: AugmentSpec, mean: list[float],
                  std: list[float], data_cfg: Any, run: RunSide) -> dict[str, BatchLoader]:
    transform = ImageTransform(spec, mean, std, device=run.device,
                               channels_last=run.channels_last)
    return {split: loader(src, split, data_cfg, run, transform) for split, src in sources.items()}


def split_meta(loaders: dict[str, BatchLoader], data_cfg: Any, val_source: str) -> dict[str, Any]:
    """The split that was used, for the run's summary and ``results.json``."""
    counts = {split: loaders[split].num_samples if split in loaders else None
              for split in ("train", "val", "test")}
    return {**counts, "val_source": val_source, "split_seed": data_cfg.split_seed,
            "val_size": data_cfg.val_size, "train_size": data_cfg.train_size,
            # the names the summary code read before the split was spelt out
            **{f"num_{s}": n for s, n in counts.items() if n is not None}}


def image_meta(name: str, source: str, classes: list[str], shape: tuple[int, int, int],
               norm: tuple[list[float], list[float]], spec: AugmentSpec,
               split: dict[str, Any], run: RunSide) -> dict[str, Any]:
    mean, std = norm
    return {
        "kind": "image", "name": name, "source": source, "classes": classes,
        "num_classes": len(classes), "input_shape": list(shape), "in_chans": shape[0],
        "image_size": list(shape[1:]), "mean": mean, "std": std,
        "resize": "cover, bilinear, centre crop", "alpha_background": ALPHA_BACKGROUND,
        "augment": str(spec), "channels_last": run.channels_last, "split": split,
    }


def check_single_class(source: str, classes: list[str], allow: bool = False) -> None:
    """One class trains to a meaningless 100%: an error, unless ``allow`` (then a warning).

    ``allow`` is ``--allow-single-class`` (``data.allow_single_class``), for a deliberate
    one-class run such as a smoke test or a fine-tuning step that adds classes later.
    """
    if len(classes) != 1:
        return
    if not allow:
        raise DataError(f"{source} has a single class ({classes[0]!r}): every prediction would "
                        "be that class; add the other classes, or pass --allow-single-class")
    log.warning("%s has a single class (%r): every prediction will be that class and "
                "accuracy is trivially 100%%", source, classes[0])
