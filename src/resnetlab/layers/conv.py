"""Conv -> norm -> activation, and the one place that instantiates activation types."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvNormAct", "make_act", "conv_layer", "SubsampledConv1x1"]

LayerType = Callable[..., nn.Module]

# Off only for the regression test (tests/layers/test_platform_avx2.py), which must see the bug without
# it; "1" in this variable brings back the plain strided kernel.  Read once, at import.
STRIDED_1X1_WORKAROUND = os.environ.get("RESNETLAB_UNSAFE_STRIDED_1X1", "") != "1"


def make_act(act_layer: LayerType | None, inplace: bool = True) -> nn.Module:
    """Instantiate an activation type; in place (where the type supports it) unless
    ``inplace=False``.  In place saves one activation-sized buffer per call; callers pass False
    where the input may be a tensor someone else still reads (a block input, a hooked output)."""
    if act_layer is None:
        return nn.Identity()
    try:
        accepts_inplace = "inplace" in inspect.signature(act_layer).parameters
    except (TypeError, ValueError):  # builtins / C types without a signature
        accepts_inplace = False
    return act_layer(inplace=inplace) if accepts_inplace else act_layer()


class SubsampledConv1x1(nn.Conv2d):
    """A strided 1x1 convolution computed as ``x[:, :, ::s, ::s]`` then a stride-1 1x1 conv.

    The two are the same function (a 1x1 kernel reads only the pixels the stride keeps), with the
    same parameters and state_dict keys as ``nn.Conv2d``, so torchvision weights load unchanged.
    Why: on CPUs, oneDNN's strided-1x1 backward-weights kernel (the "rtus" path, which copies the
    subsampled input into a scratch buffer) writes past that buffer for few input channels in
    channels_last: < 8 on AVX2, < 16 on AVX-512 (uxlfoundation/oneDNN issue 6035, "1x1
    convolution backward_weights writes past the rtus workspace",
    https://github.com/uxlfoundation/oneDNN/issues/6035).  The result is heap corruption: a
    crash, a hang, or silently wrong gradients.  Doing the subsampling ourselves costs the same
    copy rtus makes and keeps oneDNN on its stride-1 kernel.  Other devices use the strided conv.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not STRIDED_1X1_WORKAROUND or x.device.type != "cpu":
            return super().forward(x)
        channels_last = not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)
        sh, sw = self.stride
        x = x[:, :, ::sh, ::sw]
        # The strided view is not recognised as channels_last; without this copy the conv would
        # return NCHW and every later layer would convert back.
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, self.weight, self.bias, 1, 0, 1, self.groups)


def conv_layer(in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, *,
               groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """A 2-d convolution with "same" padding for odd kernels (k // 2), so only the stride
    changes the spatial size.  A strided 1x1 is a :class:`SubsampledConv1x1` (a CPU bug)."""
    conv_type = SubsampledConv1x1 if kernel_size == 1 and stride > 1 else nn.Conv2d
    return conv_type(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                     groups=groups, bias=bias)


class ConvNormAct(nn.Sequential):
    """``conv(k x k, stride) -> norm -> act`` as a ``Sequential`` with children ``0, 1, 2``.

    The numeric child names give the state_dict layout torchvision/timm use for projection
    shortcuts (``downsample.0`` conv, ``downsample.1`` BN), so weights load without renaming.
    ``norm_layer=None`` leaves the norm out (and gives the conv a bias unless ``bias=False``);
    ``act_layer=None`` leaves the activation out.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, *,
                 groups: int = 1, norm_layer: LayerType | None = nn.BatchNorm2d,
                 act_layer: LayerType | None = nn.ReLU, bias: bool | None = None):
        bias = norm_layer is None if bias is None else bias  # a norm's shift makes a bias redundant
        layers: list[nn.Module] = [conv_layer(in_chs, out_chs, kernel_size, stride,
                                              groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_chs))
        if act_layer is not None:
            layers.append(make_act(act_layer))
        super().__init__(*layers)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
