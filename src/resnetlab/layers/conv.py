"""Conv -> norm -> activation, and the one place that instantiates activation types."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

__all__ = ["ConvNormAct", "make_act", "conv_layer"]

LayerType = Callable[..., nn.Module]


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


def conv_layer(in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, *,
               groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """A 2-d convolution with "same" padding for odd kernels (k // 2), so only the stride
    changes the spatial size."""
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
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
