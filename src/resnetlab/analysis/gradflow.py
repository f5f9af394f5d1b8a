"""Gradient flow: what really happens to the gradients of deep plain and residual networks.

For a few real batches, in depth order, it measures

* the norm of the loss gradient w.r.t. every conv/linear weight (skip projections marked);
* the norm of the loss gradient w.r.t. each block's input;
* the forward activation scale (RMS) of each block's output, and the logits' standard deviation;
* for residual blocks, the ratio of the residual-branch to the skip-path output norm.

The textbook story is that gradients *vanish* in deep plain stacks.  He et al. 2015 (sec. 4.1)
argue that with BN they do not, and the mean-field analysis of BN (Yang et al. 2019) predicts they
*explode* at initialisation; :func:`describe` states which of these the numbers show.

Norms are taken in float64, so an fp32 gradient with huge but finite entries is not reported as
overflowing; genuinely non-finite gradients (inf/NaN) stay inf/NaN in the rows and are counted,
never turned into zeros.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GradFlow", "measure_gradflow", "summarize", "describe", "magnitude", "plain_twin_args"]


@dataclass
class GradFlow:
    """Per-layer and per-block measurements of one model (means over the batches)."""

    label: str
    layers: list[dict[str, Any]] = field(default_factory=list)   # one row per weight layer
    blocks: list[dict[str, Any]] = field(default_factory=list)   # one row per residual block
    logits_std: float = math.nan
    loss: float = math.nan

    def rows(self) -> list[dict[str, Any]]:
        """All measurements as flat CSV rows (``kind`` = ``weight`` or ``block``)."""
        out = [{"model": self.label, "kind": "weight", **r} for r in self.layers]
        return out + [{"model": self.label, "kind": "block", **r} for r in self.blocks]


def _norm(t: torch.Tensor | None) -> float:
    # float64: an fp32 sum of squares overflows at norms above ~1e19, which is not "non-finite"
    return math.nan if t is None else float(torch.linalg.vector_norm(t.detach().double()))


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean().sqrt())


class _BlockProbe:
    """Forward hooks on one block: input gradient, output RMS, branch and skip norms."""

    def __init__(self, block: nn.Module):
        self.input_grad: list[float] = []
        self.act: list[float] = []
        self.branch: list[float] = []
        self.skip: list[float] = []
        self.handles = [block.register_forward_pre_hook(self._pre),
                        block.register_forward_hook(self._post)]
        # documented hook points of resnetlab blocks: drop_path gets the branch just before the
        # addition, downsample is the skip path (None in a plain block)
        if getattr(block, "downsample", None) is not None and hasattr(block, "drop_path"):
            self.handles.append(block.drop_path.register_forward_hook(
                lambda m, i, o: self.branch.append(_norm(o))))
            self.handles.append(block.downsample.register_forward_hook(
                lambda m, i, o: self.skip.append(_norm(o))))

    def _pre(self, module, args):
        x = args[0]
        if x.requires_grad:
            x.register_hook(lambda g: self.input_grad.append(_norm(g)))

    def _post(self, module, args, out):
        self.act.append(_rms(out))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """Conv and linear layers in registration (= forward) order, with "is on a skip path"."""
    skips = {id(m) for b in _blocks(model) if getattr(b, "downsample", None) is not None
             for m in b.downsample.modules()}
    return [(name, m, id(m) in skips) for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]


def _blocks(model: nn.Module) -> list[nn.Module]:
    return list(model.blocks()) if hasattr(model, "blocks") else []


def measure_gradflow(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     *, label: str | None = None) -> GradFlow:
    """Gradient-flow measurements of ``model`` on ``batches`` (see the module docstring).

    Runs in training mode (BN uses batch statistics, as while training) on a copy, so the
    caller's model, its BN running statistics and its ``.grad`` fields are left untouched.
    Weight gradients are accumulated over the batches (the gradient of the mean loss).
    """
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    blocks = _blocks(net)
    names = {id(m): n for n, m in net.named_modules()}
    probes = [_BlockProbe(b) for b in blocks]
    logits_std, loss_sum = [], 0.0
    try:
        batches = list(batches)
        total = max(1, _total(batches))
        for x, y in batches:
            logits = net(x.float())
            # sum / total: the accumulated .grad is the gradient of the mean loss over all images
            loss = F.cross_entropy(logits.float(), y.long(), reduction="sum") / total
            loss.backward()
            logits_std.append(float(logits.detach().double().std()))
            loss_sum += float(loss.detach())
    finally:
        for p in probes:
            p.remove()
    flow = GradFlow(label or getattr(model, "build_args", {}).get("name", type(model).__name__))
    flow.logits_std, flow.loss = _mean(logits_std), loss_sum
    for depth, (name, m, skip) in enumerate(_weight_layers(net)):
        flow.layers.append({"index": depth, "name": name, "skip": skip,
                            "type": "conv" if isinstance(m, nn.Conv2d) else "linear",
                            "weight_grad_norm": _norm(m.weight.grad), "weight_norm": _norm(m.weight)})
    for i, (b, p) in enumerate(zip(blocks, probes, strict=True)):
        ratio = _mean(p.branch) / _mean(p.skip) if p.skip else math.nan
        flow.blocks.append({"index": i, "name": names.get(id(b), str(i)),
                            "input_grad_norm": _mean(p.input_grad), "act_rms": _mean(p.act),
                            "branch_skip_ratio": ratio})
    return flow


def _total(batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(len(y) for _, y in batches)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def summarize(flow: GradFlow) -> dict[str, Any]:
    """The headline numbers of one model: first/last conv weight-gradient ratio, spread over
    layers (max/min), logits std and how many measurements are non-finite."""
    convs = [r for r in flow.layers if not r["skip"] and r["type"] == "conv"]
    grads = [r["weight_grad_norm"] for r in convs]
    finite = [g for g in grads if _finite(g) and g > 0]
    nonfinite = sum(not _finite(g) for g in grads) + sum(
        not _finite(b["input_grad_norm"]) for b in flow.blocks)
    first, last = (grads[0], grads[-1]) if grads else (math.nan, math.nan)
    ratio = first / last if _finite(first) and _finite(last) and last > 0 else math.nan
    return {"model": flow.label, "layers": len(grads), "first_last_ratio": ratio,
            "spread": max(finite) / min(finite) if finite else math.nan,
            "logits_std": flow.logits_std, "loss": flow.loss, "nonfinite": nonfinite,
            "first_grad": first, "last_grad": last}


def magnitude(x: float) -> str:
    """A ratio in words-friendly form: ``8x``, ``740x``, ``10^3x``; non-finite as such."""
    if not _finite(x):
        return "non-finite"
    if x <= 0:
        return f"{x:g}x"
    if 0.01 <= x < 1000:
        return f"{x:.3g}x"
    return f"10^{round(math.log10(x))}x"


def describe(summaries: Sequence[dict[str, Any]], norm: str = "batch") -> list[str]:
    """Findings in words computed from the numbers (never a canned conclusion)."""
    lines = []
    for s in summaries:
        lines.append(_one_model(s))
    plain = [s for s in summaries if _is_plain(s["model"]) and _finite(s["first_last_ratio"])]
    if plain:
        lines.append(_textbook(plain, norm))
    lines += _twins(summaries)
    if norm == "none":
        lines += [_forward(s) for s in summaries if not _is_plain(s["model"]) and _extreme(s["logits_std"])]
    return lines


def _extreme(std: float) -> bool:
    """Logits far from unit scale: the forward signal vanished (< 0.1) or exploded (> 100)."""
    return _finite(std) and (std < 0.1 or std > 100)


def _forward(s: dict[str, Any]) -> str:
    way = "vanishes" if s["logits_std"] < 0.1 else "explodes"
    return (f"without normalisation the forward signal of {s['model']} {way} (logits std "
            f"{s['logits_std']:.3g}) while its weight gradients stay within {magnitude(s['spread'])} "
            "across layers")


def _one_model(s: dict[str, Any]) -> str:
    name, r = s["model"], s["first_last_ratio"]
    if s["nonfinite"]:
        return (f"{name}: {s['nonfinite']} gradient measurements are non-finite (inf/NaN: the "
                f"backward pass overflowed); they are reported as such, not as zeros")
    if not _finite(r):
        return f"{name}: the first/last gradient ratio could not be computed"
    way = "larger" if r >= 1 else "smaller"
    factor = magnitude(r if r >= 1 else 1 / r)
    return (f"early layers of {name} receive {factor} {way} weight gradients than its last "
            f"conv layer (spread over {s['layers']} layers: {magnitude(s['spread'])}; "
            f"logits std {s['logits_std']:.3g})")


def _is_plain(label: str) -> bool:
    return "plain" in label


def _textbook(plain: Sequence[dict[str, Any]], norm: str) -> str:
    deepest = max(plain, key=lambda s: s["layers"])
    r = deepest["first_last_ratio"]
    if r > 10:
        grow = "they explode" if r > 1000 else "they grow toward the input instead of vanishing"
        what = ("this contradicts the textbook vanishing-gradient story: the early-layer gradients "
                f"of {deepest['model']} are {magnitude(r)} larger than the last layer's: {grow}")
    elif r < 0.1:
        what = (f"this agrees with the textbook story: the early-layer gradients of "
                f"{deepest['model']} are {magnitude(1 / r)} smaller than the last layer's (they vanish)")
    else:
        what = (f"neither vanishing nor exploding: {deepest['model']}'s first/last ratio is "
                f"{magnitude(r)}")
    forward = deepest["logits_std"]
    if norm == "none" and _extreme(forward):
        what += (f"; without normalisation its forward signal "
                 f"{'vanishes' if forward < 0.1 else 'explodes'} (logits std {forward:.3g})")
    return what


def _twins(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """Plain vs residual at the same depth: who spreads its gradients more."""
    by = {s["model"]: s for s in summaries}
    out = []
    for s in summaries:
        twin = by.get(s["model"].replace("resnet", "plain", 1))
        if s["model"].startswith("resnet") and twin and _finite(twin["spread"]) and _finite(s["spread"]):
            out.append(f"{twin['model']} spreads its weight gradients over {magnitude(twin['spread'])} "
                       f"(max/min over layers), {s['model']} over {magnitude(s['spread'])}")
    return out


def plain_twin_args(build_args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Label and ``create_model`` arguments of a model's plain twin (``residual=False``)."""
    name = str(build_args["name"])
    label = name.replace("resnet", "plain", 1) if "resnet" in name else f"{name}-plain"
    return label, {**{k: v for k, v in build_args.items() if k != "name"}, "residual": False}
