"""The ResNet: stem, stages of residual blocks, head.  One class for the CIFAR family (He et al.
2015, sec. 4.2), the ImageNet family (sec. 3.4, table 1), pre-activation ResNets (He et al. 2016),
wide ResNets (Zagoruyko & Komodakis 2016) and ResNet-D (He et al. 2019, "Bag of Tricks")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from resnetlab.layers import (
    ConvNormAct,
    GlobalPool,
    LayerType,
    ZeroPadShortcut,
    check_choice,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_rate,
    conv_layer,
    create_pool2d,
    make_act,
    make_classifier,
    parse_shortcut,
    stochastic_depth_rates,
)
from resnetlab.layers.shortcut import PAD_MODES
from resnetlab.models.blocks import ResidualBlock, check_plain_options
from resnetlab.utils.errors import ConfigError

__all__ = ["ResNet", "STEM_TYPES", "VARIANTS", "scale_widths"]

STEM_TYPES = ("cifar", "imagenet", "deep")
VARIANTS = ("v1.5", "v1")


def scale_widths(widths: Sequence[int], width_mult: float) -> list[int]:
    """Stage widths times ``width_mult`` (rounded, at least 1): WRN-d-k uses ``k``."""
    check_positive("width_mult", width_mult)
    for i, w in enumerate(widths):
        check_positive_int(f"widths[{i}]", w)
    return [max(1, round(w * width_mult)) for w in widths]


def _check_layers(layers: Sequence[int]) -> list[int]:
    if len(layers) == 0:
        raise ConfigError("layers=[] : a ResNet needs at least one stage")
    for i, n in enumerate(layers):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"layers[{i}]={n!r}: every stage needs at least 1 block")
    return list(layers)


class ResNet(nn.Module):
    """A residual network (or its plain twin, ``residual=False``).

    Args:
        block: a :class:`ResidualBlock` subclass (``BasicBlock``, ``Bottleneck``, ``PreAct*``).
        layers: blocks per stage, e.g. ``[2, 2, 2, 2]`` for ResNet-18.
        widths: ``planes`` per stage before ``width_mult`` (block output = planes * expansion).
        stem_type: ``"cifar"`` (3x3, stride 1), ``"imagenet"`` (7x7/2 + 3x3/2 max pool) or
            ``"deep"`` (three 3x3 convs + max pool; ResNet-C of He et al. 2019).
        stem_width: stem output channels (not scaled by ``width_mult``).
        stem_norm_act: BN + activation after the stem conv; pre-activation CIFAR nets leave it
            to the first block (He et al. 2016, appendix).
        shortcut: ``"A"``, ``"B"``, ``"C"`` or ``"none"`` (see :mod:`resnetlab.layers.shortcut`).
        shortcut_pad: where option A puts its zero channels: ``"append"`` or ``"split"`` (half
            before, half after, as in the widely used CIFAR reimplementation); weights only
            reproduce their logits under the convention they were trained with.
        residual: ``False`` removes every skip (the plain twin; same as ``shortcut="none"``).
        variant: ``"v1.5"`` (stride on the bottleneck 3x3) or ``"v1"`` (stride on the first 1x1).
        avg_down: average-pool downsampling in projection shortcuts (ResNet-D).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the last block; linear in depth before it.
        block_drop_rate: dropout inside each block (WRN, Zagoruyko & Komodakis 2016).
        zero_init_last: start every block as its skip path (see ``zero_init_last()``).
        global_pool: ``"avg"``, ``"max"`` or ``"avgmax"``.
        default_input_size: ``(H, W)`` the network is meant for (used by tables and exporters).

    Stages are ``conv1/bn1/maxpool`` (the stem), ``layer1..N``, ``norm`` (the final BN-ReLU of
    pre-activation nets; ``Identity`` otherwise) and ``fc``; state_dict keys match torchvision.
    """

    def __init__(self, block: type[ResidualBlock], layers: Sequence[int], widths: Sequence[int],
                 *, num_classes: int = 1000, in_chans: int = 3, stem_type: str = "imagenet",
                 stem_width: int = 64, stem_norm_act: bool = True, shortcut: str | None = "B",
                 residual: bool = True, width_mult: float = 1.0, variant: str = "v1.5",
                 avg_down: bool = False, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 block_drop_rate: float = 0.0, zero_init_last: bool = False,
                 global_pool: str = "avg", norm_layer: LayerType = nn.BatchNorm2d,
                 act_layer: LayerType = nn.ReLU, default_input_size: tuple[int, int] = (224, 224),
                 shortcut_pad: str = "append"):
        super().__init__()
        check_choice("shortcut_pad", shortcut_pad, PAD_MODES)
        self.shortcut = parse_shortcut(shortcut) if residual else "none"
        self.residual = self.shortcut != "none"
        check_plain_options(self.residual, drop_path_rate, zero_init_last)
        check_positive_int("in_chans", in_chans)
        check_choice("variant", variant, VARIANTS)
        layers = _check_layers(layers)
        if len(widths) != len(layers):
            raise ConfigError(f"widths has {len(widths)} entries but layers has {len(layers)}")
        self.block_type = block.kind
        self.default_input_size = (in_chans, *default_input_size)
        self._make_stem(in_chans, stem_type, stem_width, stem_norm_act, norm_layer, act_layer)
        self._make_stages(block, layers, scale_widths(widths, width_mult), stem_width,
                          dict(norm_layer=norm_layer, act_layer=act_layer, avg_down=avg_down,
                               stride_in_1x1=variant == "v1",
                               block_drop_rate=check_rate("block_drop_rate", block_drop_rate)),
                          drop_path_rate)
        for skip in self.modules():  # the padding convention is the zero-pad shortcut's quirk
            if isinstance(skip, ZeroPadShortcut):
                skip.pad = shortcut_pad
        preact = block.preact  # pre-activation nets end with BN-ReLU (He et al. 2016, fig. 4e)
        self.norm = norm_layer(self.num_features) if preact else nn.Identity()
        self.final_act = make_act(act_layer) if preact else nn.Identity()
        self.global_pool = GlobalPool(global_pool)
        self.head_drop = nn.Dropout(check_rate("drop_rate", drop_rate))
        self.num_classes = check_non_negative("num_classes", num_classes)
        self.fc = make_classifier(self.num_features, num_classes)
        self._init_weights(zero_init_last)

    def _make_stem(self, in_chans: int, stem_type: str, width: int, norm_act: bool,
                   norm_layer: LayerType, act_layer: LayerType) -> None:
        check_choice("stem_type", stem_type, STEM_TYPES)
        check_positive_int("stem_width", width)
        if stem_type == "deep":
            # Three 3x3 convs cost about the same as one 7x7 but see more nonlinearity
            # (ResNet-C); children 0..6 match timm's resnet*d layout.
            mid = max(1, width // 2)
            self.conv1 = nn.Sequential(
                *ConvNormAct(in_chans, mid, 3, 2, norm_layer=norm_layer, act_layer=act_layer),
                *ConvNormAct(mid, mid, 3, 1, norm_layer=norm_layer, act_layer=act_layer),
                conv_layer(mid, width, 3, 1))
        else:
            k, s = (3, 1) if stem_type == "cifar" else (7, 2)
            self.conv1 = conv_layer(in_chans, width, k, s)
        self.bn1 = norm_layer(width) if norm_act else nn.Identity()
        self.act1 = make_act(act_layer) if norm_act else nn.Identity()
        # ImageNet stems reduce 224 -> 56 before the first stage (table 1); CIFAR keeps 32.
        self.maxpool = nn.Identity() if stem_type == "cifar" else create_pool2d("max", 3, 2, 1)

    def _make_stages(self, block: type[ResidualBlock], layers: list[int], widths: list[int],
                     in_chs: int, block_args: dict, drop_path_rate: float) -> None:
        rates = iter(stochastic_depth_rates(drop_path_rate, sum(layers)))
        self.stage_names: list[str] = []
        for i, (depth, planes) in enumerate(zip(layers, widths, strict=True)):
            stage = []
            for j in range(depth):
                # Each stage after the first halves the resolution in its first block.
                stride = 2 if i > 0 and j == 0 else 1
                stage.append(block(in_chs, planes, stride, shortcut=self.shortcut,
                                   residual=self.residual, drop_path=next(rates), **block_args))
                in_chs = stage[-1].out_chs
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            self.stage_names.append(f"layer{i + 1}")
        self.num_features = in_chs

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            # Meta tensors (tables, parameter counts) have no values; initialising them through
            # PyTorch's Python meta kernels was 60% of building ResNet-1202 there.
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                # He et al. 2015 ("Delving Deep into Rectifiers"), fan-out as in torchvision.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for b in self.blocks():
                b.zero_init_last()

    # -- the model interface (DESIGN.md) -----------------------------------------------------

    def blocks(self) -> list[ResidualBlock]:
        """The residual blocks in forward order."""
        return [b for name in self.stage_names for b in getattr(self, name)]

    @property
    def stem(self) -> nn.Sequential:
        """The stem modules as one (unregistered) ``Sequential``: conv1, bn1, act1, maxpool.

        A view for running or inspecting the stem; ``forward`` calls the members directly
        (torchvision's keys), so hooks belong on ``conv1``/``bn1``/``maxpool``.
        """
        return nn.Sequential(self.conv1, self.bn1, self.act1, self.maxpool)

    def named_stages(self) -> list[tuple[str, nn.Module]]:
        """``[("stem", ...), ("layer1", ...), ..., ("fc", ...)]`` in forward order."""
        stages = [(n, getattr(self, n)) for n in self.stage_names]
        return [("stem", self.stem), *stages, ("fc", self.fc)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: ``(N, C, H, W) -> (N, num_features, H/s, W/s)``."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.final_act(self.norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool, dropout, classifier; ``pre_logits=True`` stops before the classifier."""
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh ``fc`` for ``num_classes`` (0: none; the model returns pooled features)."""
        self.num_classes = check_non_negative("num_classes", num_classes)
        if global_pool is not None:
            self.global_pool = GlobalPool(global_pool)
        ref = next(self.parameters())
        self.fc = make_classifier(self.num_features, num_classes).to(ref.device, ref.dtype)


# -- families: depth/width rules of the papers; the registry's builders call these ------------

def _cifar_blocks_per_stage(depth: int, block: type[ResidualBlock], extra: int) -> int:
    """Blocks per stage from the depth: 3 stages of n blocks, each block 2 (basic) or 3
    (bottleneck) weight layers, plus ``extra`` (stem + fc = 2; WRN counts 4)."""
    per_block = 3 * (3 if block.expansion > 1 else 2)
    n, rem = divmod(depth - extra, per_block) if isinstance(depth, int) else (0, 1)
    if rem or n < 1:
        first = [per_block * k + extra for k in (1, 2, 3)]
        raise ConfigError(f"depth={depth!r} is not {per_block}n+{extra} with n >= 1 for a "
                          f"{block.kind} net (e.g. {', '.join(map(str, first))})")
    return n


def cifar_resnet(depth: int, block: type[ResidualBlock], *, num_classes: int = 10,
                 in_chans: int = 3, shortcut: str | None = "A", **kwargs) -> ResNet:
    """A CIFAR ResNet (He et al. 2015, sec. 4.2): a 3x3 stem of 16 channels and three stages of
    n blocks with 16/32/64 planes at 32/16/8 pixels; depth = 6n+2 (9n+2 for bottlenecks)."""
    n = _cifar_blocks_per_stage(depth, block, 2)
    # The stem is as wide as the first stage here, so it scales with width_mult too; otherwise
    # option A (which cannot drop channels) would fail for width_mult < 1.
    stem_width = scale_widths([16], kwargs.get("width_mult", 1.0))[0]
    return ResNet(block, [n, n, n], [16, 32, 64], num_classes=num_classes, in_chans=in_chans,
                  shortcut=shortcut, stem_type="cifar", stem_width=stem_width,
                  stem_norm_act=not block.preact, default_input_size=(32, 32), **kwargs)


def wide_resnet(depth: int, widen_factor: float, block: type[ResidualBlock], *,
                width_mult: float = 1.0, shortcut: str | None = "B", num_classes: int = 10,
                in_chans: int = 3, **kwargs) -> ResNet:
    """WRN-depth-k (Zagoruyko & Komodakis 2016, table 1): pre-activation basic blocks with
    16k/32k/64k channels, n = (depth - 4) / 6 per stage, 1x1 projections where shapes change.
    ``width_mult`` multiplies ``widen_factor`` (WRN-28-10 with 0.5 is WRN-28-5)."""
    n = _cifar_blocks_per_stage(depth, block, 4)
    check_positive("widen_factor", widen_factor)
    check_positive("width_mult", width_mult)
    return ResNet(block, [n, n, n], [16, 32, 64], width_mult=widen_factor * width_mult,
                  num_classes=num_classes, in_chans=in_chans, shortcut=shortcut,
                  stem_type="cifar", stem_width=16, stem_norm_act=False,
                  default_input_size=(32, 32), **kwargs)


def imagenet_resnet(layers: Sequence[int], block: type[ResidualBlock], *,
                    deep_stem: bool = False, num_classes: int = 1000, in_chans: int = 3,
                    shortcut: str | None = "B", **kwargs) -> ResNet:
    """An ImageNet ResNet (He et al. 2015, table 1): 7x7/2 stem + max pool, four stages with
    64/128/256/512 planes.  ``deep_stem`` swaps in three 3x3 convs (ResNet-C); with
    ``avg_down=True`` as well it is ResNet-D (He et al. 2019, sec. 4.1)."""
    return ResNet(block, layers, [64, 128, 256, 512], num_classes=num_classes,
                  in_chans=in_chans, shortcut=shortcut,
                  stem_type="deep" if deep_stem else "imagenet", stem_width=64,
                  default_input_size=(224, 224), **kwargs)
