"""Reading trained runs for analysis: the one place that turns a run directory into a model and
batches of its data.

Kept deliberately small and isolated, so it can switch to the run API (``resnetlab.run``) once
that exists without touching the analyses themselves.  It depends only on ``checkpoint.py``'s
:func:`load_checkpoint`, the registry's ``create_model`` and the data package's ``build_data``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.checkpoint import load_checkpoint, resolve_checkpoint_dir
from resnetlab.models import create_model
from resnetlab.utils.errors import ConfigError, DataError

__all__ = ["LoadedRun", "load_run", "checkpoint_dirs", "is_run_dir", "data_batches"]


@dataclass
class LoadedRun:
    """A network rebuilt from a checkpoint, with what analyses need to know about it."""

    model: nn.Module
    build_args: dict[str, Any]
    classes: list[str]
    meta: dict[str, Any]
    path: Path
    data_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.build_args["name"])

    @property
    def data_name(self) -> str | None:
        return (self.data_meta or {}).get("name")


def is_run_dir(path: str | Path) -> bool:
    """True for a run directory or a checkpoint directory (anything holding weights)."""
    return Path(path).is_dir() and resolve_checkpoint_dir(path) is not None


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Every saved checkpoint of a run (``checkpoints/*``), oldest first by training step."""
    root = Path(run_dir) / "checkpoints"
    found = [resolve_checkpoint_dir(p) for p in sorted(root.iterdir())] if root.is_dir() else []
    found = [p for p in found if p is not None]
    if not found and resolve_checkpoint_dir(run_dir):
        found = [resolve_checkpoint_dir(run_dir)]
    return sorted(set(found), key=lambda p: (load_checkpoint(p, train_state=False).meta.get("step") or 0, p.name))


def load_run(path: str | Path, *, weights: bool = True) -> LoadedRun:
    """Rebuild the network of a run or checkpoint directory (eval mode, CPU).

    ``weights=False`` returns the same architecture freshly initialised (for "at initialisation"
    measurements; seed the RNG first).  Bare weight files are refused: analyses need the model
    arguments a resnetlab checkpoint carries.
    """
    ckpt = load_checkpoint(path, train_state=False)
    args = ckpt.meta.get("model")
    if not args or "name" not in args:
        raise DataError(f"{path}: no model arguments in this checkpoint (bare weights?); analyses "
                        "need a resnetlab run directory")
    model = create_model(args["name"], **{k: v for k, v in args.items() if k != "name"})
    if weights:
        ckpt.load_into(model)
    classes = [str(c) for c in ckpt.meta.get("classes") or range(ckpt.meta.get("num_classes", 0))]
    return LoadedRun(model.eval(), dict(args), classes, ckpt.meta, ckpt.path,
                     dict(ckpt.meta.get("data") or {}))


def data_batches(name: str, *, split: str = "train", images: int = 256, batch_size: int = 128,
                 data_dir: str | None = None, seed: int = 0, in_chans: int | None = None,
                 saved: dict[str, Any] | None = None) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """The first ``images`` samples of a split (no augmentation, fixed order) as CPU batches,
    and the class names.  ``split`` is ``train``, ``val`` or ``test``; ``saved`` is a run's
    saved data config (``meta["config"]["data"]``), so its split and sizes are reproduced."""
    from resnetlab.data import BatchLoader, build_data
    from resnetlab.engine.config import DataConfig

    known = {k: v for k, v in (saved or {}).items() if k in DataConfig.__dataclass_fields__}
    cfg = DataConfig(**{**known, "name": name, "batch_size": batch_size, "augment": "none",
                        "eval_batch_size": batch_size})
    cfg.data_dir = data_dir if data_dir is not None else cfg.data_dir
    bundle = build_data(cfg, seed=seed, device="cpu", channels_last=False, in_chans=in_chans)
    loader = {"train": bundle.train, "val": bundle.val, "test": bundle.test}.get(split)
    if loader is None:
        raise ConfigError(f"--split {split}: {name} has no {split} split (choose train, val or test)")
    # evaluation order (file order, no augmentation) so every model sees the same images
    fixed = BatchLoader(loader.source, batch_size=batch_size, train=False, seed=seed,
                        transform=bundle.val.transform, name=split)
    return _take(fixed, images), list(bundle.classes)


def _take(loader, images: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    left = images
    for x, y in loader.epoch(0):
        if left <= 0:
            return
        yield x[:left].float().contiguous(), y[:left]
        left -= len(y)
