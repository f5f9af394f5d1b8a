"""Block lesions (Veit et al. 2016, "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks", sec. 4): remove residual blocks from a trained network and measure accuracy.

A lesioned residual block becomes its shortcut: its branch output is replaced by zeros through a
forward hook on ``block.drop_path`` (the documented place where the branch meets the addition),
so the block computes exactly what its skip path gives, activation included.  A plain block has
no skip path; it is replaced by the parameter-free shortcut of option A (identity, or strided
subsampling plus zero channels where the shape changes), which is what "removing the layer"
means for a plain stack.  No parameter or buffer is touched, so restoring is bit-identical.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["lesioned", "block_shapes", "accuracy", "LesionStudy", "lesion_study", "describe_lesions"]


def _zero_branch(module, args, out):
    return torch.zeros_like(out)


def _shape_skip(x: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """Option-A skip to ``out_shape`` (C, H, W): subsample by the stride, zero-pad channels."""
    c, h = out_shape[0], out_shape[1]
    stride = max(1, x.shape[2] // h)
    y = x[:, :, ::stride, ::stride] if stride > 1 else x
    return F.pad(y, (0, 0, 0, 0, 0, c - y.shape[1])) if c > y.shape[1] else y[:, :c]


@contextlib.contextmanager
def lesioned(model: nn.Module, indices: Iterable[int],
             shapes: Sequence[tuple[tuple[int, ...], tuple[int, ...]]] | None = None) -> Iterator[nn.Module]:
    """Inside the ``with``, blocks ``indices`` of ``model.blocks()`` are removed (see module doc).

    ``shapes`` (from :func:`block_shapes`) is needed only for plain blocks that change shape.
    Everything is undone on exit, even after an exception.
    """
    blocks = list(model.blocks())
    handles, patched = [], []
    try:
        for i in sorted(set(indices)):
            b = blocks[i]
            if getattr(b, "downsample", None) is not None and hasattr(b, "drop_path"):
                handles.append(b.drop_path.register_forward_hook(_zero_branch))
            else:
                out_shape = shapes[i][1] if shapes else None
                b.forward = types.MethodType(
                    lambda self, x, s=out_shape: x if s is None else _shape_skip(x, s), b)
                patched.append(b)
        yield model
    finally:
        for h in handles:
            h.remove()
        for b in patched:
            del b.forward  # the instance attribute; the class's forward is back


@torch.no_grad()
def block_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(input CHW, output CHW)`` of every block for inputs like ``x`` (marks downsampling)."""
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append((tuple(i[0].shape[1:]), tuple(o.shape[1:]))))
             for b in model.blocks()]
    try:
        model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return shapes


@torch.no_grad()
def accuracy(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    model.train(was)
    return correct / total if total else math.nan


@dataclass
class LesionStudy:
    """Results: ``single`` has one row per removed block, ``multi`` one per (k, draw)."""

    label: str
    baseline: float
    single: list[dict[str, Any]] = field(default_factory=list)
    multi: list[dict[str, Any]] = field(default_factory=list)


def lesion_study(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                 label: str = "model", max_k: int = 5, draws: int = 5, seed: int = 0) -> LesionStudy:
    """Accuracy with each block removed in turn, then with ``k = 1..max_k`` random blocks
    removed at once (``draws`` random sets per k; downsampling blocks included)."""
    batches = list(batches)
    names = {id(m): n for n, m in model.named_modules()}
    blocks = list(model.blocks())
    shapes = block_shapes(model, batches[0][0])
    study = LesionStudy(label, accuracy(model, batches))
    for i, b in enumerate(blocks):
        with lesioned(model, [i], shapes):
            acc = accuracy(model, batches)
        study.single.append({"index": i, "block": names.get(id(b), str(i)),
                             "downsampling": shapes[i][0] != shapes[i][1], "accuracy": acc,
                             "drop": study.baseline - acc})
    rng = random.Random(seed)
    for k in range(1, min(max_k, len(blocks)) + 1):
        for d in range(draws):
            chosen = sorted(rng.sample(range(len(blocks)), k))
            with lesioned(model, chosen, shapes):
                acc = accuracy(model, batches)
            study.multi.append({"k": k, "draw": d, "blocks": " ".join(map(str, chosen)),
                                "accuracy": acc, "drop": study.baseline - acc})
    return study


def describe_lesions(study: LesionStudy) -> list[str]:
    """Findings in words computed from the numbers."""
    inner = [r["drop"] for r in study.single if not r["downsampling"]]
    down = [r["drop"] for r in study.single if r["downsampling"]]
    pts = lambda v: f"{100 * v:.2f} points"  # noqa: E731
    lines = [f"{study.label}: accuracy {100 * study.baseline:.2f}% intact"]
    if inner:
        worst = max(study.single, key=lambda r: r["drop"] if not r["downsampling"] else -1)
        lines.append(f"removing one non-downsampling block costs at most {pts(max(inner))} "
                     f"(median {pts(statistics.median(inner))}; worst: {worst['block']})")
    if down:
        lines.append(f"removing a downsampling block costs up to {pts(max(down))}")
    ks = sorted({r["k"] for r in study.multi})
    if ks:
        mean = {k: statistics.fmean(r["accuracy"] for r in study.multi if r["k"] == k) for k in ks}
        lines.append("mean accuracy with k random blocks removed: " +
                     ", ".join(f"k={k}: {100 * mean[k]:.1f}%" for k in ks))
    return lines
