"""Scoring a trained network on a data split.

Labels are always compared by class *name*: a folder or table whose classes are ordered
differently from the run's (or are a subset of them) is mapped onto the run's class list before
anything is counted, and a class the run does not know is an error (or dropped and counted
with ``ignore_unknown_classes``).  Indices from two different class lists are never compared.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from resnetlab.data import BatchLoader, flip_tta
from resnetlab.data.bundle import RunSide
from resnetlab.data.tables import build_table_with_schema
from resnetlab.deploy import LoadedModel, load_model
from resnetlab.engine import evaluate as engine_evaluate
from resnetlab.engine.config import DataConfig, RunConfig
from resnetlab.engine.logging import tracked
from resnetlab.run.build import check_input_fits, make_data
from resnetlab.run.tasks import task_of
from resnetlab.utils.device import resolve_device, resolve_dtype
from resnetlab.utils.errors import ConfigError

__all__ = ["evaluate", "EvalReport", "SPLITS", "split_loader", "label_map"]

SPLITS = ("test", "val", "train", "all")


@dataclass
class EvalReport:
    """What :func:`evaluate` measured; ``classes`` are the network's (the confusion matrix's
    rows and columns), ``per_class`` maps each class name to its recall (None: no samples)."""

    source: str
    model: str
    data: str
    split: str
    tta: bool
    loss: float
    top1: float
    top5: float | None
    num_samples: int
    classes: list[str]
    per_class: dict[str, float | None]
    confusion: list[list[int]]
    dropped_unknown: int = 0
    unknown_classes: list[str] = field(default_factory=list)
    rmse: float | None = None  # a regression table: RMSE in target units and R^2, no top-1
    r2: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def label_map(data_classes: Sequence[str], net_classes: Sequence[str], *, data_name: str,
              ignore_unknown: bool) -> torch.Tensor | None:
    """Index in ``net_classes`` of each of ``data_classes`` (-1: unknown); None when the two
    lists are the same.  Unknown classes are a :class:`ConfigError` unless ``ignore_unknown``."""
    data_classes, net_classes = [str(c) for c in data_classes], [str(c) for c in net_classes]
    if data_classes == net_classes:
        return None
    where = {name: i for i, name in enumerate(net_classes)}
    unknown = [c for c in data_classes if c not in where]
    if unknown and not ignore_unknown:
        raise ConfigError(f"--data {data_name} has classes the network does not know: "
                          f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                          f"(it knows {', '.join(net_classes[:10])}); pass "
                          "--ignore-unknown-classes to drop their samples")
    return torch.tensor([where.get(c, -1) for c in data_classes])


class _Relabelled:
    """Batches with labels moved onto the network's class list; unknown-class rows dropped."""

    def __init__(self, batches: Iterable, mapping: torch.Tensor):
        self.batches, self.mapping, self.dropped = batches, mapping, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.batches:
            new = self.mapping.to(y.device)[y]
            keep = new >= 0
            self.dropped += int((~keep).sum())
            if keep.any():
                yield x[keep], new[keep]


def split_loader(bundle: Any, split: str) -> Iterable:
    """The batches of ``split`` without augmentation, in a fixed order; ``all`` chains every
    split the data has (each row once)."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: choose {', '.join(SPLITS)}")
    loaders = {"train": _plain_train(bundle), "val": bundle.val, "test": bundle.test}
    if split == "all":
        parts = [lo for lo in loaders.values() if lo is not None and lo.num_samples]
        return itertools.chain.from_iterable(parts)
    loader = loaders[split]
    if loader is None or loader.num_samples == 0:
        hint = "; --split all scores every row" if split != "train" else ""
        raise ConfigError(f"--split {split}: {bundle.meta['name']} has no {split} split here{hint}")
    return loader


def _plain_train(bundle: Any) -> BatchLoader | None:
    """The training split in fixed order (the data is built with ``augment="none"`` here, so
    its transform only normalises)."""
    train, held_out = bundle.train, bundle.val if bundle.val is not None else bundle.test
    if train is None or train.num_samples == 0:
        return None
    return BatchLoader(train.source, batch_size=held_out.batch_size if held_out else train.batch_size,
                       train=False, seed=0, transform=train.transform, name="train")


def data_for(loaded: LoadedModel, data: str | None, *, split: str, data_dir: str | None,
             batch_size: int | None, device: torch.device) -> Any:
    """The data set to evaluate ``loaded`` on.

    Without ``data``, the one it was trained on, split exactly as in training (the checkpoint's
    config).  Another data set keeps its own channels for named sets (a mismatch is an error)
    and converts folder images to the network's channels and training size.  ``split="all"``
    holds nothing out of a folder or table.
    """
    trained = (loaded.data_meta or {}).get("name")
    name = data or trained
    if name is None:
        raise ConfigError(f"{loaded.source}: bare weights do not say which data they were trained "
                          "on; pass --data NAME (e.g. --data fashion-mnist)")
    table = (loaded.data_meta or {}).get("table")
    if table and name != trained and name.startswith("csv:"):
        # a held-out table: the run's target column and column statistics; every row is test
        cfg = DataConfig(name=name, eval_batch_size=batch_size or DataConfig.eval_batch_size)
        return build_table_with_schema(name[4:], table, cfg, RunSide(0, device, False, None))
    saved = loaded.meta.get("config")
    same = name == trained
    cfg = RunConfig.from_dict(saved, source=str(loaded.source)).data if saved and same else DataConfig(name=name)
    cfg.augment, cfg.train_size = "none", None if split == "all" else cfg.train_size
    cfg.data_dir = data_dir if data_dir is not None else cfg.data_dir
    cfg.eval_batch_size = batch_size or cfg.eval_batch_size
    folder = name.startswith("folder:")
    if split == "all" and name.startswith(("folder:", "csv:")):
        cfg.val_size = 0
    if folder and cfg.image_size is None and (loaded.data_meta or {}).get("image_size"):
        cfg.image_size = tuple(loaded.data_meta["image_size"])  # the size it was trained at
    in_chans = loaded.in_channels if loaded.input_kind == "image" and (folder or same) else None
    seed = (saved or {}).get("train", {}).get("seed", 0)
    bundle = make_data(cfg, seed=seed, device=device, channels_last=True, in_chans=in_chans)
    check_input_fits(loaded.build_args["name"], loaded.input_kind, loaded.in_channels, bundle, name)
    return bundle


def _check_target(loaded: LoadedModel, target: str | None) -> None:
    """``--target`` names the column to score against: a table run knows only its own."""
    if target is None:
        return
    own = ((loaded.data_meta or {}).get("table") or {}).get("target")
    if own is None:
        raise ConfigError(f"--target {target}: {loaded.source} was not trained on a CSV table; "
                          "drop --target")
    if target != own:
        raise ConfigError(f"--target {target}: {loaded.source} was trained to predict column "
                          f"{own!r}; pass --target {own} (or drop --target)")


def evaluate(source: Any, data: str | None = None, split: str = "test", tta: bool = False, *,
             device: str = "auto", precision: str = "auto", data_dir: str | None = None,
             batch_size: int | None = None, target: str | None = None,
             ignore_unknown_classes: bool = False, progress: bool | None = False,
             **weights: Any) -> tuple[EvalReport, Any]:
    """Score a run (a :class:`~resnetlab.run.Run`, its directory, a checkpoint or weights file)
    on ``split`` of ``data`` (default: the data it was trained on).

    ``target`` (a CSV's column) must be the run's own, if given.
    ``weights`` (``model``, ``num_classes``, ``in_chans``, ``model_kwargs``) rebuild bare weights.
    Returns the report and the data bundle it was computed on.
    """
    if batch_size is not None and batch_size < 1:  # eval's flag, not train's --eval-batch-size
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")
    path = getattr(source, "run_dir", source)
    loaded = load_model(os.fspath(path), **weights)
    _check_target(loaded, target)
    dev = resolve_device(device)
    bundle = data_for(loaded, data, split=split, data_dir=data_dir, batch_size=batch_size, device=dev)
    named = bool(loaded.meta.get("classes"))  # bare weights know no names: compare by position
    net_classes = loaded.classes if named else [str(i) for i in range(_net_outputs(loaded, bundle))]
    mapping = label_map(bundle.classes, net_classes, data_name=bundle.meta["name"],
                        ignore_unknown=ignore_unknown_classes) if named else None
    batches = split_loader(bundle, split)
    relabelled = _Relabelled(batches, mapping) if mapping is not None else None
    result = engine_evaluate(
        loaded.model.to(dev), tracked(relabelled or batches, f"eval {split}", progress),
        device=dev, dtype=resolve_dtype(precision, dev), num_classes=len(net_classes),
        tta=flip_tta if tta and len(bundle.input_shape) == 3 else None, channels_last=True,
        task=task_of(loaded.data_meta or {}, len(net_classes), net_classes), fold_bn=True)
    if result.num_samples == 0:
        raise ConfigError(f"--data {bundle.meta['name']} --split {split}: no samples of a class "
                          "the network knows")
    report = _report(loaded, bundle, split, tta, result, net_classes)
    if relabelled is not None:
        report.dropped_unknown = relabelled.dropped
        report.unknown_classes = [c for c, i in zip(bundle.classes, mapping.tolist(), strict=True) if i < 0]
    return report, bundle


def _net_outputs(loaded: LoadedModel, bundle: Any) -> int:
    outputs = loaded.build_args.get("num_classes", bundle.num_classes)
    if bundle.num_classes != outputs:
        raise ConfigError(f"{loaded.source} predicts {outputs} classes but --data "
                          f"{bundle.meta['name']} has {bundle.num_classes}")
    return outputs


def _report(loaded: LoadedModel, bundle: Any, split: str, tta: bool, result: Any,
            classes: list[str]) -> EvalReport:
    if result.rmse is not None:
        return EvalReport(
            source=str(loaded.source), model=loaded.build_args["name"], data=bundle.meta["name"],
            split=split, tta=tta, loss=result.loss, top1=None, top5=None,
            num_samples=result.num_samples, classes=classes, per_class={}, confusion=[],
            rmse=result.rmse, r2=result.r2)
    counts = [sum(row) for row in result.confusion]
    per_class = {c: (acc if n else None) for c, acc, n in zip(classes, result.per_class, counts, strict=True)}
    return EvalReport(
        source=str(loaded.source), model=loaded.build_args["name"], data=bundle.meta["name"],
        split=split, tta=tta, loss=result.loss, top1=result.top1,
        top5=result.top5 if len(classes) > 5 else None, num_samples=result.num_samples,
        classes=classes, per_class=per_class, confusion=result.confusion)
