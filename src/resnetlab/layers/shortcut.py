"""Skip paths of residual blocks: He et al. 2015 (sec. 3.3, "Identity vs. Projection Shortcuts").

* ``"A"``: identity; where the shape changes, strided subsampling plus zero-padded channels
  (parameter-free).
* ``"B"``: identity; a 1x1 conv + BN projection only where the shape changes.
* ``"C"``: a 1x1 conv + BN projection on every block.
* ``"none"``: no skip at all (the plain twin).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.layers.conv import ConvNormAct, LayerType
from resnetlab.utils.errors import ConfigError

__all__ = ["SHORTCUTS", "PAD_MODES", "parse_shortcut", "ZeroPadShortcut", "ProjectionShortcut",
           "make_shortcut"]

SHORTCUTS = ("A", "B", "C", "none")
# Where option A puts its zero channels.  The paper does not say; "append" (after the identity
# channels) is ours, "split" (half before, half after) is what the most widely used CIFAR
# reimplementation does.  Keys and shapes are equal, outputs are not: weights only reproduce
# their logits under the convention they were trained with.
PAD_MODES = ("append", "split")


def parse_shortcut(value: str | None) -> str:
    """Normalise a shortcut option (``"a"`` -> ``"A"``, ``None`` -> ``"none"``)."""
    if value is None:
        return "none"
    key = value.upper() if isinstance(value, str) and len(value) == 1 else value
    if isinstance(key, str) and key.lower() == "none":
        return "none"
    if key not in SHORTCUTS:
        raise ConfigError(f"shortcut={value!r} is not an option; choose 'A', 'B', 'C' or 'none'")
    return key


class ZeroPadShortcut(nn.Module):
    """Option A: keep every ``stride``-th pixel and add zero channels.

    Both steps are views/pads of the input, with no parameters, so the shortcut costs one copy.
    Zero padding can only add channels; shrinking them needs a projection (option B or C).
    ``pad="append"`` puts the zeros after the identity channels, ``"split"`` puts half of them
    (rounded down) before and the rest after (see :data:`PAD_MODES`).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, pad: str = "append"):
        super().__init__()
        if out_chs < in_chs:
            raise ConfigError(
                f"shortcut='A' cannot shrink channels from {in_chs} to {out_chs} (zero padding "
                "only adds channels); use shortcut='B' or 'C' for this block/expansion")
        if pad not in PAD_MODES:
            raise ConfigError(f"shortcut_pad={pad!r} is not an option; choose "
                              f"{' or '.join(map(repr, PAD_MODES))}")
        self.in_chs, self.out_chs, self.stride, self.pad = in_chs, out_chs, stride, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)
        if self.stride > 1:
            # Same sample grid as a k=3, padding=1, stride-s conv: positions 0, s, 2s, ...
            x = x[:, :, :: self.stride, :: self.stride]
        if self.out_chs > self.in_chs:
            extra = self.out_chs - self.in_chs
            before = extra // 2 if self.pad == "split" else 0
            x = F.pad(x, (0, 0, 0, 0, before, extra - before))
        # The strided view of an odd-sized map loses its format; the addition after this needs
        # both operands in one layout to stay on the fast channels_last kernels.
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def extra_repr(self) -> str:
        return f"{self.in_chs}->{self.out_chs}, stride={self.stride}, pad={self.pad!r}"


class ProjectionShortcut(nn.Sequential):
    """Options B/C: 1x1 conv (+ norm).  Children ``0`` conv, ``1`` norm, as in torchvision.

    With ``avg_down`` (ResNet-D, He et al. 2019 "Bag of Tricks", sec. 4.1) a 2x2 average pool does
    the subsampling and the conv has stride 1, so no input pixel is ignored; the children are
    then ``0`` pool, ``1`` conv, ``2`` norm (timm's layout).  ``norm_layer=None`` gives a bare
    conv, as pre-activation blocks use (He et al. 2016, fig. 4e).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, *,
                 norm_layer: LayerType | None = nn.BatchNorm2d, avg_down: bool = False):
        # A strided 1x1 here is a SubsampledConv1x1 (see conv_layer: a oneDNN bug on CPUs).
        proj = ConvNormAct(in_chs, out_chs, 1, 1 if avg_down else stride,
                           norm_layer=norm_layer, act_layer=None, bias=False)
        if avg_down:
            pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                    if stride > 1 else nn.Identity())
            super().__init__(pool, *proj)
        else:
            super().__init__(*proj)


def make_shortcut(kind: str, in_chs: int, out_chs: int, stride: int = 1, *,
                  norm_layer: LayerType | None = nn.BatchNorm2d,
                  avg_down: bool = False) -> nn.Module | None:
    """The skip module of one block: ``None`` for ``"none"``, ``nn.Identity`` where the shape is
    unchanged (A, B), else a :class:`ZeroPadShortcut` or :class:`ProjectionShortcut`."""
    kind = parse_shortcut(kind)
    if kind == "none":
        return None
    if avg_down and kind == "A":
        raise ConfigError("avg_down=True needs a projection shortcut; use shortcut='B' or 'C'")
    same_shape = in_chs == out_chs and stride == 1
    if kind == "A":
        return nn.Identity() if same_shape else ZeroPadShortcut(in_chs, out_chs, stride)
    if kind == "B" and same_shape:
        return nn.Identity()
    return ProjectionShortcut(in_chs, out_chs, stride, norm_layer=norm_layer, avg_down=avg_down)
