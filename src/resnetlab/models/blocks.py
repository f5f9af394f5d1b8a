"""Residual blocks: post-activation (He et al. 2015, fig. 2 and 5) and pre-activation (He et al.
2016, "Identity Mappings in Deep Residual Networks", fig. 4e).

Every block is an ordinary ``nn.Module`` with ``forward(x)``.  ``residual=False`` (or
``shortcut="none"``) gives the *plain twin*: the same layers without the addition.  Two modules
are stable places to hook for analysis (lesions, gradient flow):

* ``block.drop_path`` receives the branch output just before the addition;
* ``block.downsample`` is the skip path (``nn.Identity`` for an identity shortcut; ``None`` in a
  plain block).

Attribute names follow torchvision (``conv1, bn1, ..., downsample.0, downsample.1``) so its weight
files load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from resnetlab.layers import (
    DropPath,
    LayerType,
    ProjectionShortcut,
    conv_layer,
    make_act,
    make_shortcut,
    parse_shortcut,
)
from resnetlab.layers.checks import check_rate
from resnetlab.utils.errors import ConfigError

__all__ = ["check_plain_options", "ResidualBlock", "BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck"]


def _dropout(p: float) -> nn.Module:
    return nn.Dropout(check_rate("block_drop_rate", p)) if p > 0 else nn.Identity()


def check_plain_options(residual: bool, drop_path_rate: float, zero_init_last: bool) -> None:
    """Options that only make sense with skips; for the plain twin they are a ``ConfigError``."""
    if residual:
        return
    if drop_path_rate:
        # Dropping the only path of a plain block would zero the whole signal.
        raise ConfigError(f"drop_path_rate={drop_path_rate:g} needs skip connections; use "
                          "drop_path_rate=0 for the plain twin (residual=False)")
    if zero_init_last:
        raise ConfigError("zero_init_last=True would zero every block of the plain twin "
                          "(residual=False); use zero_init_last=False")


class ResidualBlock(nn.Module):
    """What every block shares: ``residual``, ``shortcut``, channel bookkeeping and
    ``zero_init_last()``.  Subclasses set ``expansion``, ``preact`` and ``kind``."""

    expansion: int = 1
    preact: bool = False
    kind: str = ""

    def __init__(self, in_chs: int, out_chs: int, stride: int, *, shortcut: str | None,
                 residual: bool, drop_path: float):
        super().__init__()
        self.shortcut = parse_shortcut(shortcut) if residual else "none"
        self.residual = self.shortcut != "none"
        check_plain_options(self.residual, drop_path, False)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride

    def _make_skip(self, norm_layer: LayerType | None, avg_down: bool) -> None:
        self.downsample = make_shortcut(self.shortcut, self.in_chs, self.out_chs, self.stride,
                                        norm_layer=norm_layer, avg_down=avg_down)

    def _last_layer(self) -> nn.Module:
        raise NotImplementedError

    def _add_skip(self, branch: torch.Tensor, skip_input: torch.Tensor) -> torch.Tensor:
        if self.downsample is None:
            return branch
        return branch + self.downsample(skip_input)  # out of place: hooks may keep `branch`

    @torch.no_grad()
    def zero_init_last(self) -> None:
        """Zero the scale of the branch's last layer, so the block starts as its skip path
        (Goyal et al. 2017, sec. 5.1).  Post-activation blocks zero the last BN's gamma."""
        last = self._last_layer()
        if not isinstance(getattr(last, "weight", None), torch.Tensor):
            raise ConfigError(f"zero_init_last=True needs a learnable scale in {last!r}; use a "
                              "norm_layer with affine weights or zero_init_last=False")
        last.weight.zero_()

    def extra_repr(self) -> str:
        return f"residual={self.residual}, shortcut={self.shortcut!r}"


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (He et al. 2015, fig. 5 left): ``relu(bn2(conv2(relu(bn1(conv1 x)))) + skip)``.

    ``stride_in_1x1`` is accepted for a uniform block signature and ignored (one stride place).
    ``block_drop_rate`` is dropout between the convs (Zagoruyko & Komodakis 2016, sec. 2.4).
    """

    kind = "basic"

    def __init__(self, in_chs: int, planes: int, stride: int = 1, *, shortcut: str | None = "B",
                 residual: bool = True, norm_layer: LayerType = nn.BatchNorm2d,
                 act_layer: LayerType = nn.ReLU, drop_path: float = 0.0,
                 block_drop_rate: float = 0.0, avg_down: bool = False,
                 stride_in_1x1: bool = False):
        super().__init__(in_chs, planes * self.expansion, stride, shortcut=shortcut,
                         residual=residual, drop_path=drop_path)
        self.conv1 = conv_layer(in_chs, planes, 3, stride)
        self.bn1 = norm_layer(planes)
        self.act1 = make_act(act_layer)
        self.dropout = _dropout(block_drop_rate)
        self.conv2 = conv_layer(planes, self.out_chs, 3)
        self.bn2 = norm_layer(self.out_chs)
        self.drop_path = DropPath(drop_path)
        self._make_skip(norm_layer, avg_down)
        self.act2 = make_act(act_layer, inplace=False)  # a plain twin's input is a hooked output

    def _last_layer(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.act1(self.bn1(self.conv1(x))))
        out = self.drop_path(self.bn2(self.conv2(out)))
        return self.act2(self._add_skip(out, x))


class Bottleneck(ResidualBlock):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4) (He et al. 2015, fig. 5 right).

    The stride sits on the 3x3 conv ("v1.5", as torchvision; +0.5% top-1 on ImageNet, Goyal et
    al. 2017) unless ``stride_in_1x1=True`` (the original "v1", which skips 3/4 of the input).
    """

    kind = "bottleneck"
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, *, shortcut: str | None = "B",
                 residual: bool = True, norm_layer: LayerType = nn.BatchNorm2d,
                 act_layer: LayerType = nn.ReLU, drop_path: float = 0.0,
                 block_drop_rate: float = 0.0, avg_down: bool = False,
                 stride_in_1x1: bool = False):
        super().__init__(in_chs, planes * self.expansion, stride, shortcut=shortcut,
                         residual=residual, drop_path=drop_path)
        # v1's strided 1x1 is a SubsampledConv1x1 (conv_layer): a oneDNN bug, layers/conv.py.
        self.conv1 = conv_layer(in_chs, planes, 1, stride if stride_in_1x1 else 1)
        self.bn1 = norm_layer(planes)
        self.act1 = make_act(act_layer)
        self.conv2 = conv_layer(planes, planes, 3, 1 if stride_in_1x1 else stride)
        self.bn2 = norm_layer(planes)
        self.act2 = make_act(act_layer)
        self.dropout = _dropout(block_drop_rate)
        self.conv3 = conv_layer(planes, self.out_chs, 1)
        self.bn3 = norm_layer(self.out_chs)
        self.drop_path = DropPath(drop_path)
        self._make_skip(norm_layer, avg_down)
        self.act3 = make_act(act_layer, inplace=False)  # a plain twin's input is a hooked output

    def _last_layer(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.dropout(self.act2(self.bn2(self.conv2(out))))
        out = self.drop_path(self.bn3(self.conv3(out)))
        return self.act3(self._add_skip(out, x))


class _PreActMixin:
    """Pre-activation specifics shared by both pre-activation blocks.

    A projection skip reads the pre-activated input (He et al. 2016, appendix: "we adopt the
    activation right before splitting"), an identity skip the raw input.  ``zero_init_last``
    zeroes the last *conv*: zeroing the last BN's gamma would feed 0 into a ReLU, whose gradient
    at 0 is 0, so the branch could never recover.
    """

    def _skip_input(self, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return pre if isinstance(self.downsample, ProjectionShortcut) else x

    @torch.no_grad()
    def zero_init_last(self) -> None:
        """Zero the branch's last conv, so the block starts as its skip path."""
        self._last_layer().weight.zero_()


class PreActBasicBlock(_PreActMixin, ResidualBlock):
    """``x + conv2(relu(bn2(conv1(relu(bn1 x)))))`` (He et al. 2016, fig. 4e); no activation
    after the addition, so an identity skip is a clean identity path.  Projections are bare
    1x1 convs (no BN), as in the paper's code."""

    kind = "preact_basic"
    preact = True

    def __init__(self, in_chs: int, planes: int, stride: int = 1, *, shortcut: str | None = "B",
                 residual: bool = True, norm_layer: LayerType = nn.BatchNorm2d,
                 act_layer: LayerType = nn.ReLU, drop_path: float = 0.0,
                 block_drop_rate: float = 0.0, avg_down: bool = False,
                 stride_in_1x1: bool = False):
        super().__init__(in_chs, planes * self.expansion, stride, shortcut=shortcut,
                         residual=residual, drop_path=drop_path)
        self.bn1 = norm_layer(in_chs)
        self.act1 = make_act(act_layer, inplace=False)  # bn1 may be Identity: never touch x
        self.conv1 = conv_layer(in_chs, planes, 3, stride)
        self.bn2 = norm_layer(planes)
        self.act2 = make_act(act_layer)
        self.dropout = _dropout(block_drop_rate)
        self.conv2 = conv_layer(planes, self.out_chs, 3)
        self.drop_path = DropPath(drop_path)
        self._make_skip(None, avg_down)

    def _last_layer(self) -> nn.Module:
        return self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.dropout(self.act2(self.bn2(self.conv1(pre))))
        out = self.drop_path(self.conv2(out))
        return self._add_skip(out, self._skip_input(x, pre))


class PreActBottleneck(_PreActMixin, ResidualBlock):
    """Pre-activation bottleneck (He et al. 2016, used for ResNet-164/1001 on CIFAR):
    BN-ReLU-1x1, BN-ReLU-3x3 (stride, v1.5 placement unless ``stride_in_1x1``), BN-ReLU-1x1 (x4)."""

    kind = "preact_bottleneck"
    preact = True
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, *, shortcut: str | None = "B",
                 residual: bool = True, norm_layer: LayerType = nn.BatchNorm2d,
                 act_layer: LayerType = nn.ReLU, drop_path: float = 0.0,
                 block_drop_rate: float = 0.0, avg_down: bool = False,
                 stride_in_1x1: bool = False):
        super().__init__(in_chs, planes * self.expansion, stride, shortcut=shortcut,
                         residual=residual, drop_path=drop_path)
        self.bn1 = norm_layer(in_chs)
        self.act1 = make_act(act_layer, inplace=False)  # bn1 may be Identity: never touch x
        self.conv1 = conv_layer(in_chs, planes, 1, stride if stride_in_1x1 else 1)
        self.bn2 = norm_layer(planes)
        self.act2 = make_act(act_layer)
        self.conv2 = conv_layer(planes, planes, 3, 1 if stride_in_1x1 else stride)
        self.bn3 = norm_layer(planes)
        self.act3 = make_act(act_layer)
        self.dropout = _dropout(block_drop_rate)
        self.conv3 = conv_layer(planes, self.out_chs, 1)
        self.drop_path = DropPath(drop_path)
        self._make_skip(None, avg_down)

    def _last_layer(self) -> nn.Module:
        return self.conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.act2(self.bn2(self.conv1(pre)))
        out = self.dropout(self.act3(self.bn3(self.conv2(out))))
        out = self.drop_path(self.conv3(out))
        return self._add_skip(out, self._skip_input(x, pre))
