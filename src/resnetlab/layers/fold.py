"""Fold BatchNorm into the convolution that feeds it, for inference.

In eval mode a BN is the per-channel affine map ``y = (x - mean) * g / sqrt(var + eps) + b``; when
``x`` is a convolution's output the map can be absorbed into that convolution's weights and bias
(Jacob et al. 2018, "Quantization and Training of Neural Networks ...", sec. 3.2), which saves a
full pass over every activation and is what int8 kernels expect.

Pairs are found from the data flow, not from attribute names: one forward pass with hooks and a
torch-function mode records which BN reads a tensor that a convolution produced and that no other
operation reads or modifies.  So it works for every
registered model (post-activation blocks, projection shortcuts, deep stems) and leaves alone BNs
that do not directly follow a convolution (pre-activation blocks).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

__all__ = ["fold_bn", "conv_bn_pairs"]

_SAMPLE_SIZE = 64  # pixels: small, yet large enough for every ImageNet stem and stage stride


class _CountUses(TorchFunctionMode):
    """Counts every torch call that reads one of the tracked tensors (adds, pads, cats, ...)."""

    def __init__(self, tracked: dict[int, torch.Tensor]):
        super().__init__()
        self.tracked, self.uses = tracked, {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        # metadata queries (x.dim(), x.shape, x._version) return no tensor and are no reads
        if any(isinstance(r, torch.Tensor) for r in tree_leaves(result)):
            for t in tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor) and self.tracked.get(id(t)) is t:
                    self.uses[id(t)] = self.uses.get(id(t), 0) + 1
        return result


def conv_bn_pairs(model: nn.Module, sample: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """``(conv_name, bn_name)`` for each BatchNorm2d whose input is a Conv2d's output that
    nothing else reads and nothing modifies in place (found in one traced forward pass)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return []
    if sample is None:
        sample = torch.zeros(1, convs[0][1].in_channels, _SAMPLE_SIZE, _SAMPLE_SIZE)
    # conv outputs stay referenced here, so no other tensor can reuse their id()
    produced: dict[int, torch.Tensor] = {}
    names: dict[int, tuple[str, int]] = {}  # id -> (conv name, tensor version when produced)
    candidates: list[tuple[str, str, int]] = []
    counter = _CountUses(produced)

    def on_conv(name):
        def hook(_m, _inputs, out):
            produced[id(out)], names[id(out)] = out, (name, out._version)
        return hook

    def on_bn(name):
        def hook(_m, inputs, _out):
            if produced.get(id(inputs[0])) is inputs[0]:
                candidates.append((names[id(inputs[0])][0], name, id(inputs[0])))
        return hook

    handles = [m.register_forward_hook(on_conv(n)) for n, m in convs]
    handles += [m.register_forward_hook(on_bn(n)) for n, m in model.named_modules()
                if isinstance(m, nn.BatchNorm2d)]
    was_training = model.training
    try:
        with torch.no_grad(), counter:
            model.eval()(sample)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return [(conv, bn) for conv, bn, t in candidates
            if counter.uses.get(t) == 1 and produced[t]._version == names[t][1]]


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    shift = (bias - bn.running_mean) * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
    conv.bias = nn.Parameter(shift.to(conv.weight.dtype))


def fold_bn(model: nn.Module, sample: torch.Tensor | None = None, *,
            inplace: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv -> BatchNorm2d pair folded into the conv.

    The folded BNs become ``nn.Identity``, so module names (and hooks on the convs) stay valid;
    outputs match the unfolded model in eval mode to float32 rounding (about 1e-6).  ``sample``
    is one input batch used to trace the data flow (default: zeros at 64x64 with the first
    conv's channels).  The result is for inference only: training it would train without BN.
    """
    net = model if inplace else copy.deepcopy(model)
    net.eval()
    modules = dict(net.named_modules())
    for conv_name, bn_name in conv_bn_pairs(net, sample):
        _fold_into(modules[conv_name], modules[bn_name])
        parent_name, _, child = bn_name.rpartition(".")
        setattr(modules[parent_name] if parent_name else net, child, nn.Identity())
    return net
