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

__all__ = ["lesioned", "block_shapes", "block_paths", "accuracy", "LesionStudy", "lesion_study",
           "describe_lesions", "essential_note", "ESSENTIAL_DROP"]

# A block whose removal alone costs this much top-1 (a fraction) is called essential and gets a
# note on why; Veit et al. 2016 (fig. 3) see at most a few points for non-downsampling blocks.
ESSENTIAL_DROP = 0.10


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


def _skip_kind(block: nn.Module) -> str:
    """What the lesioned block leaves behind: ``identity``, ``zero-pad`` (option A where the
    shape changes), ``projection`` (a learned conv/Dense + norm) or ``none`` (a plain block)."""
    skip = getattr(block, "downsample", None)
    if skip is None:
        return "none"
    if isinstance(skip, nn.Identity):
        return "identity"
    if not any(True for _ in skip.parameters()):
        return "zero-pad"
    return "projection"


@torch.no_grad()
def block_paths(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per block, for inputs like ``x``: its skip kind and the ratio of the branch's output norm
    to the skip's (how much of the block's output the branch, not the skip, carries).  The ratio
    is NaN for plain blocks, which have no skip."""
    norms: dict[int, dict[str, float]] = {}
    hooks = []
    for i, b in enumerate(model.blocks()):
        norms[i] = {}
        for part in ("drop_path", "downsample"):
            module = getattr(b, part, None)
            if isinstance(module, nn.Module):
                hooks.append(module.register_forward_hook(
                    lambda m, a, o, i=i, part=part: norms[i].update({part: float(o.float().norm())})))
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    out = []
    for i, b in enumerate(model.blocks()):
        branch, skip = norms[i].get("drop_path"), norms[i].get("downsample")
        ratio = branch / skip if branch is not None and skip else math.nan
        out.append({"skip": _skip_kind(b), "branch_to_skip": ratio,
                    "stride": getattr(b, "stride", 1)})
    return out


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
    paths = block_paths(model, batches[0][0])
    study = LesionStudy(label, accuracy(model, batches))
    for i, b in enumerate(blocks):
        with lesioned(model, [i], shapes):
            acc = accuracy(model, batches)
        study.single.append({"index": i, "block": names.get(id(b), str(i)),
                             "downsampling": shapes[i][0] != shapes[i][1], "accuracy": acc,
                             "drop": study.baseline - acc, **paths[i],
                             "in_shape": "x".join(map(str, shapes[i][0])),
                             "out_shape": "x".join(map(str, shapes[i][1]))})
    rng = random.Random(seed)
    for k in range(1, min(max_k, len(blocks)) + 1):
        for d in range(draws):
            chosen = sorted(rng.sample(range(len(blocks)), k))
            with lesioned(model, chosen, shapes):
                acc = accuracy(model, batches)
            study.multi.append({"k": k, "draw": d, "blocks": " ".join(map(str, chosen)),
                                "accuracy": acc, "drop": study.baseline - acc})
    return study


def _pts(v: float) -> str:
    return f"{100 * abs(v):.2f} points"


def _worst_one(drops: list[float], what: str) -> str:
    """``removing one X costs at most 1.20 points`` or, when every removal helps, says so."""
    worst = max(drops)
    if worst > 0:
        return f"removing one {what} costs at most {_pts(worst)}"
    if worst == 0:
        return f"removing any one {what} leaves accuracy unchanged or better"
    return f"removing any one {what} improves accuracy, by {_pts(worst)} to {_pts(min(drops))}"


def _shape_words(row: dict[str, Any]) -> str:
    chw_in, chw_out = row.get("in_shape", ""), row.get("out_shape", "")
    if row["downsampling"]:
        return f"it changes the shape {chw_in} -> {chw_out} (stride {row.get('stride', 1)})"
    return f"it keeps the shape {chw_in}" if chw_in else "it keeps its input's shape"


def _skip_words(row: dict[str, Any]) -> str:
    kind = row.get("skip")
    if kind == "identity":
        return ("its skip is an identity, so the lesioned network still receives the block's "
                "input unchanged: the block is not the only path")
    if kind == "zero-pad":
        return ("its skip is option A's zero-pad (subsampled input, new channels zero): the "
                "lesioned network keeps only the input's channels, subsampled")
    if kind == "projection":
        return ("its skip is a learned projection, so removing the block leaves that projection "
                "as the only path: there is no identity to lean on")
    return "it is a plain block with no skip: removal leaves option A's parameter-free stand-in"


def essential_note(row: dict[str, Any]) -> str:
    """Why one block's removal costs so much, in words computed from the model's structure
    (position, shapes, skip kind) and from its branch/skip output norms on the same images."""
    parts = [f"{row['block']} is essential: removing it costs {_pts(row['drop'])}"]
    if row["index"] == 0:
        parts.append("it is the first block after the stem")
    parts += [_shape_words(row), _skip_words(row)]
    ratio = row.get("branch_to_skip", math.nan)
    if isinstance(ratio, float) and math.isfinite(ratio):
        tail = (", so the layers after it were trained on what its branch adds, which the skip "
                "alone does not supply" if ratio >= 1 else
                ", so the skip carries most of its output and the branch's smaller part still matters")
        parts.append(f"on these images its branch's output has {ratio:.2f}x the norm of its "
                     f"skip's{tail}")
    return "; ".join(parts)


def describe_lesions(study: LesionStudy) -> list[str]:
    """Findings in words computed from the numbers; one note per essential block."""
    inner = [r["drop"] for r in study.single if not r["downsampling"]]
    down = [r["drop"] for r in study.single if r["downsampling"]]
    lines = [f"{study.label}: accuracy {100 * study.baseline:.2f}% intact"]
    if inner:
        worst = max(study.single, key=lambda r: r["drop"] if not r["downsampling"] else -math.inf)
        lines.append(f"{_worst_one(inner, 'non-downsampling block')} (median change "
                     f"{-100 * statistics.median(inner):+.2f} points; worst: {worst['block']})")
    if down:
        lines.append(_worst_one(down, "downsampling block"))
    best = min(study.single, key=lambda r: r["drop"], default=None)
    if best is not None and best["drop"] < 0:
        lines.append(f"removing {best['block']} improves accuracy by {_pts(best['drop'])}")
    ks = sorted({r["k"] for r in study.multi})
    if ks:
        mean = {k: statistics.fmean(r["accuracy"] for r in study.multi if r["k"] == k) for k in ks}
        lines.append("mean accuracy with k random blocks removed: " +
                     ", ".join(f"k={k}: {100 * mean[k]:.1f}%" for k in ks))
    lines += [essential_note(r) for r in study.single if r["drop"] >= ESSENTIAL_DROP]
    return lines
