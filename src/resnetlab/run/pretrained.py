"""Bring a pretrained network into a run: what :func:`~resnetlab.run.train` does when
``config.finetune.source`` is set (``resnetlab finetune``, :func:`resnetlab.run.finetune`).

A fine-tune is a run like any other; this module only sits between "build data and a fresh
network" and ``fit``: copy the pretrained weights in (new head, adapted input), apply the
freeze / BN / learning-rate policies, and return the callback that unfreezes at an epoch.
On resume the weights come from the run's own checkpoint, so only the policies are applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from resnetlab.checkpoint import read_meta, resolve_checkpoint_dir
from resnetlab.deploy import load_model
from resnetlab.engine.config import RunConfig
from resnetlab.transfer import load_pretrained
from resnetlab.transfer.finetune import (
    freeze,
    freeze_bn,
    lr_scales,
    parse_freeze,
    reestimate_bn,
    transplant,
    unfreeze,
)
from resnetlab.utils.errors import ConfigError
from resnetlab.utils.notices import say

__all__ = ["Source", "read_source", "prepare_finetune", "Finetuning"]

# build arguments that follow the new data, not the pretrained network
DATA_ARGS = ("name", "num_classes", "in_chans", "in_features")


@dataclass
class Source:
    """A pretrained network's weights, build arguments, classes and data meta (if known)."""

    state: dict[str, torch.Tensor]
    build_args: dict[str, Any]
    classes: list[str]
    data_meta: dict[str, Any] | None


def read_source(source: str, model: str | None = None) -> Source:
    """A run directory or checkpoint (``best``, else ``last``), or a weights file in any layout
    :mod:`resnetlab.transfer` reads (``model`` names the architecture when the file cannot)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"--from {source}: no such run directory or weights file")
    if path.is_dir():
        loaded = load_model(str(path))
        return Source(loaded.model.state_dict(), dict(loaded.build_args), list(loaded.classes),
                      loaded.data_meta)
    net, args, weights = load_pretrained(path, model, strict=False)
    count = int(args.get("num_classes", 0) or 0)
    classes = [str(c) for c in weights.meta.get("classes") or range(count)]
    return Source(net.state_dict(), dict(args), classes, weights.meta.get("data"))



def _size_notice(src: Source, bundle: Any) -> str | None:
    before = (src.data_meta or {}).get("input_shape")
    after = list(bundle.input_shape)
    if not before or len(before) != 3 or len(after) != 3 or list(before[1:]) == after[1:]:
        return None
    return (f"input size {before[1]}x{before[2]} -> {after[1]}x{after[2]}: the global average "
            "pooling gives the head the same number of features")


def _epochs_done(resume_dir: Path | None) -> float:
    last = resolve_checkpoint_dir(resume_dir / "checkpoints" / "last") if resume_dir else None
    return float(read_meta(last).get("epoch") or 0) if last is not None else 0.0


class Finetuning(NamedTuple):
    """What a fine-tune hands ``fit``: its ``on_epoch_end`` (unfreezing) and ``lr_scales``."""

    on_epoch_end: Callable[[dict[str, Any]], bool] | None = None
    lr_scales: dict[str, float] | None = None


def prepare_finetune(cfg: RunConfig, model: nn.Module, bundle: Any, device: torch.device,
                     resume_dir: Path | None) -> Finetuning:
    """Apply ``cfg.finetune`` to ``model`` (fresh, built for ``bundle``): the transplanted
    weights, freezing and BN policy.  Returns what ``fit`` needs for the rest (empty when the
    run is not a fine-tune)."""
    ft = cfg.finetune
    if ft.source is None:
        return Finetuning()
    parse_freeze(ft.freeze)  # a bad --freeze fails before any weight is read
    if resume_dir is None:
        src = read_source(ft.source, cfg.model.name)
        ft.source_classes = list(src.classes)  # saved in config.yaml with the run
        for notice in [*transplant(model, src.state, source_classes=src.classes,
                                   classes=bundle.classes), _size_notice(src, bundle)]:
            if notice:
                say(notice)
        if ft.bn_reestimate:
            used = reestimate_bn(model.to(device), bundle.train, ft.bn_reestimate)
            say(f"re-estimated BatchNorm statistics on {used} batches of the new data")
    frozen = freeze(model, ft.freeze)
    if ft.bn == "frozen":
        freeze_bn(model)
    scales = lr_scales(model, ft.backbone_lr_scale)
    at = ft.unfreeze_at
    if at is None or not frozen:
        return Finetuning(None, scales)
    if _epochs_done(resume_dir) >= at:
        unfreeze(model, frozen, keep_bn_frozen=ft.bn == "frozen")
        return Finetuning(None, scales)

    def unfreeze_when_due(row: dict[str, Any]) -> bool:
        if row.get("epoch") == at:
            unfreeze(model, frozen, keep_bn_frozen=ft.bn == "frozen")
            say(f"unfreezing {ft.freeze} after epoch {at}")
        return False
    return Finetuning(unfreeze_when_due, scales)
