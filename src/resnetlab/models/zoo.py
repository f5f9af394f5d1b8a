"""Every registered model: one decorated builder per name, so ``grep "def resnet50"`` finds it.

Each builder sets block, depths and widths; nothing else.  Every builder takes the same keyword
arguments (``num_classes``, ``in_chans`` or ``in_features``, ``drop_rate``, ``drop_path_rate``,
``zero_init_last``, ``residual``, ``shortcut``, ``width_mult``, ``norm_layer``, ``act_layer``;
ImageNet builders also ``variant``, ``deep_stem``, ``avg_down``).  ``plain*`` names are the same
networks with ``residual=False``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from resnetlab.models.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from resnetlab.models.mlp import MLPResNet
from resnetlab.models.registry import register_model
from resnetlab.models.resnet import ResNet, cifar_resnet, imagenet_resnet, wide_resnet

__all__ = ["IMAGE_KWARGS", "IMAGENET_KWARGS", "MLP_KWARGS"]

# Structure is fixed by the name; everything else is an option of every image builder.
_STRUCTURAL = {"block", "layers", "widths", "stem_type", "stem_width", "stem_norm_act",
               "default_input_size"}


def _kwarg_names(fn: Callable) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


IMAGE_KWARGS = frozenset(_kwarg_names(ResNet.__init__) - _STRUCTURAL - {"self"})
IMAGENET_KWARGS = IMAGE_KWARGS | {"deep_stem"}
MLP_KWARGS = frozenset(_kwarg_names(MLPResNet.__init__) - {"self"})

_FAMILY = {  # family -> (accepted keyword arguments, input kind, default input size)
    "cifar": (IMAGE_KWARGS, "image", (3, 32, 32)),
    "wide": (IMAGE_KWARGS, "image", (3, 32, 32)),
    "imagenet": (IMAGENET_KWARGS, "image", (3, 224, 224)),
    "mlp": (MLP_KWARGS, "vector", (784,)),
}


def _tags(family: str, block: str, *, residual: bool = True, group: str | None = None,
          depth: int | None = None) -> dict[str, Any]:
    """Registration tags.  ``groups`` are what ``resnetlab models --family`` filters on: the
    family, ``preact`` for pre-activation ResNets, ``resnet-d``; ``depth`` overrides the count
    of main-path weight layers where a paper counts differently (WRN: 6n+4)."""
    accepts, kind, size = _FAMILY[family]
    preact = block.startswith("preact") and family != "wide"
    groups = (family, *(["preact"] if preact else []), *([group] if group else []))
    tags = dict(accepts=accepts, family=family, groups=groups, block=block, residual=residual,
                input_kind=kind, input_size=size)
    return tags if depth is None else {**tags, "depth": depth}


def _plain(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A plain twin's arguments: the residual builder's, with the skip connections off."""
    return {"residual": False, **kwargs}


# He et al. 2015, sec. 4.2: 6n+2 layers, option A shortcuts.

@register_model(**_tags("cifar", "basic"))
def resnet20(**kwargs: Any) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2015, sec. 4.2)."""
    return cifar_resnet(20, BasicBlock, **kwargs)


@register_model(**_tags("cifar", "basic", residual=False))
def plain20(**kwargs: Any) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2015, sec. 4.2).
    Plain twin: no skip connections."""
    return cifar_resnet(20, BasicBlock, **_plain(kwargs))


@register_model(**_tags("cifar", "basic"))
def resnet32(**kwargs: Any) -> nn.Module:
    """ResNet-32 for CIFAR (He et al. 2015, sec. 4.2)."""
    return cifar_resnet(32, BasicBlock, **kwargs)


@register_model(**_tags("cifar", "basic", residual=False))
def plain32(**kwargs: Any) -> nn.Module:
    """ResNet-32 for CIFAR (He et al. 2015, sec. 4.2).
    Plain twin: no skip connections."""
    return cifar_resnet(32, BasicBlock, **_plain(kwargs))


@register_model(**_tags("cifar", "basic"))
def resnet44(**kwargs: Any) -> nn.Module:
    """ResNet-44 for CIFAR (He et al. 2015, sec. 4.2)."""
    return cifar_resnet(44, BasicBlock, **kwargs)


@register_model(**_tags("cifar", "basic", residual=False))
def plain44(**kwargs: Any) -> nn.Module:
    """ResNet-44 for CIFAR (He et al. 2015, sec. 4.2).
    Plain twin: no skip connections."""
    return cifar_resnet(44, BasicBlock, **_plain(kwargs))


@register_model(**_tags("cifar", "basic"))
def resnet56(**kwargs: Any) -> nn.Module:
    """ResNet-56 for CIFAR (He et al. 2015, sec. 4.2)."""
    return cifar_resnet(56, BasicBlock, **kwargs)


@register_model(**_tags("cifar", "basic", residual=False))
def plain56(**kwargs: Any) -> nn.Module:
    """ResNet-56 for CIFAR (He et al. 2015, sec. 4.2).
    Plain twin: no skip connections."""
    return cifar_resnet(56, BasicBlock, **_plain(kwargs))


@register_model(**_tags("cifar", "basic"))
def resnet110(**kwargs: Any) -> nn.Module:
    """ResNet-110 for CIFAR (He et al. 2015, sec. 4.2)."""
    return cifar_resnet(110, BasicBlock, **kwargs)


@register_model(**_tags("cifar", "basic", residual=False))
def plain110(**kwargs: Any) -> nn.Module:
    """ResNet-110 for CIFAR (He et al. 2015, sec. 4.2).
    Plain twin: no skip connections."""
    return cifar_resnet(110, BasicBlock, **_plain(kwargs))


@register_model(**_tags("cifar", "basic"))
def resnet1202(**kwargs: Any) -> nn.Module:
    """ResNet-1202 for CIFAR (He et al. 2015, sec. 4.2)."""
    return cifar_resnet(1202, BasicBlock, **kwargs)


@register_model(**_tags("cifar", "basic", residual=False))
def plain1202(**kwargs: Any) -> nn.Module:
    """ResNet-1202 for CIFAR (He et al. 2015, sec. 4.2).
    Plain twin: no skip connections."""
    return cifar_resnet(1202, BasicBlock, **_plain(kwargs))


# He et al. 2016: pre-activation; the bottleneck nets used 1x1 projections (option B).

@register_model(**_tags("cifar", "preact_basic"))
def preact_resnet20(**kwargs: Any) -> nn.Module:
    """Pre-activation ResNet-20 for CIFAR (He et al. 2016)."""
    return cifar_resnet(20, PreActBasicBlock, **kwargs)


@register_model(**_tags("cifar", "preact_basic"))
def preact_resnet56(**kwargs: Any) -> nn.Module:
    """Pre-activation ResNet-56 for CIFAR (He et al. 2016)."""
    return cifar_resnet(56, PreActBasicBlock, **kwargs)


@register_model(**_tags("cifar", "preact_basic"))
def preact_resnet110(**kwargs: Any) -> nn.Module:
    """Pre-activation ResNet-110 for CIFAR (He et al. 2016)."""
    return cifar_resnet(110, PreActBasicBlock, **kwargs)


@register_model(**_tags("cifar", "preact_bottleneck"))
def preact_resnet164(**kwargs: Any) -> nn.Module:
    """Pre-activation bottleneck ResNet-164 for CIFAR (He et al. 2016, table 2)."""
    return cifar_resnet(164, PreActBottleneck, **{"shortcut": "B", **kwargs})


@register_model(**_tags("cifar", "preact_bottleneck"))
def preact_resnet1001(**kwargs: Any) -> nn.Module:
    """Pre-activation bottleneck ResNet-1001 for CIFAR (He et al. 2016, table 2)."""
    return cifar_resnet(1001, PreActBottleneck, **{"shortcut": "B", **kwargs})


# He et al. 2015, table 1 (torchvision layout and parameter counts).

@register_model(**_tags("imagenet", "basic"))
def resnet18(**kwargs: Any) -> nn.Module:
    """ResNet-18 for ImageNet (He et al. 2015, table 1)."""
    return imagenet_resnet([2, 2, 2, 2], BasicBlock, **kwargs)


@register_model(**_tags("imagenet", "basic", residual=False))
def plain18(**kwargs: Any) -> nn.Module:
    """ResNet-18 for ImageNet (He et al. 2015, table 1).
    Plain twin: no skip connections."""
    return imagenet_resnet([2, 2, 2, 2], BasicBlock, **_plain(kwargs))


@register_model(**_tags("imagenet", "preact_basic"))
def preact_resnet18(**kwargs: Any) -> nn.Module:
    """Pre-activation ResNet-18 for ImageNet (He et al. 2016)."""
    return imagenet_resnet([2, 2, 2, 2], PreActBasicBlock, **kwargs)


@register_model(**_tags("imagenet", "basic", group="resnet-d"))
def resnet18d(**kwargs: Any) -> nn.Module:
    """ResNet-18-D: deep stem and average-pool downsampling (He et al. 2019, sec. 4.1)."""
    return imagenet_resnet([2, 2, 2, 2], BasicBlock, **{"deep_stem": True, "avg_down": True, **kwargs})


@register_model(**_tags("imagenet", "basic"))
def resnet34(**kwargs: Any) -> nn.Module:
    """ResNet-34 for ImageNet (He et al. 2015, table 1)."""
    return imagenet_resnet([3, 4, 6, 3], BasicBlock, **kwargs)


@register_model(**_tags("imagenet", "basic", residual=False))
def plain34(**kwargs: Any) -> nn.Module:
    """ResNet-34 for ImageNet (He et al. 2015, table 1).
    Plain twin: no skip connections."""
    return imagenet_resnet([3, 4, 6, 3], BasicBlock, **_plain(kwargs))


@register_model(**_tags("imagenet", "preact_basic"))
def preact_resnet34(**kwargs: Any) -> nn.Module:
    """Pre-activation ResNet-34 for ImageNet (He et al. 2016)."""
    return imagenet_resnet([3, 4, 6, 3], PreActBasicBlock, **kwargs)


@register_model(**_tags("imagenet", "basic", group="resnet-d"))
def resnet34d(**kwargs: Any) -> nn.Module:
    """ResNet-34-D: deep stem and average-pool downsampling (He et al. 2019, sec. 4.1)."""
    return imagenet_resnet([3, 4, 6, 3], BasicBlock, **{"deep_stem": True, "avg_down": True, **kwargs})


@register_model(**_tags("imagenet", "bottleneck"))
def resnet50(**kwargs: Any) -> nn.Module:
    """ResNet-50 for ImageNet (He et al. 2015, table 1)."""
    return imagenet_resnet([3, 4, 6, 3], Bottleneck, **kwargs)


@register_model(**_tags("imagenet", "bottleneck", residual=False))
def plain50(**kwargs: Any) -> nn.Module:
    """ResNet-50 for ImageNet (He et al. 2015, table 1).
    Plain twin: no skip connections."""
    return imagenet_resnet([3, 4, 6, 3], Bottleneck, **_plain(kwargs))


@register_model(**_tags("imagenet", "preact_bottleneck"))
def preact_resnet50(**kwargs: Any) -> nn.Module:
    """Pre-activation ResNet-50 for ImageNet (He et al. 2016)."""
    return imagenet_resnet([3, 4, 6, 3], PreActBottleneck, **kwargs)


@register_model(**_tags("imagenet", "bottleneck", group="resnet-d"))
def resnet50d(**kwargs: Any) -> nn.Module:
    """ResNet-50-D: deep stem and average-pool downsampling (He et al. 2019, sec. 4.1)."""
    return imagenet_resnet([3, 4, 6, 3], Bottleneck, **{"deep_stem": True, "avg_down": True, **kwargs})


@register_model(**_tags("imagenet", "bottleneck"))
def resnet101(**kwargs: Any) -> nn.Module:
    """ResNet-101 for ImageNet (He et al. 2015, table 1)."""
    return imagenet_resnet([3, 4, 23, 3], Bottleneck, **kwargs)


@register_model(**_tags("imagenet", "bottleneck", residual=False))
def plain101(**kwargs: Any) -> nn.Module:
    """ResNet-101 for ImageNet (He et al. 2015, table 1).
    Plain twin: no skip connections."""
    return imagenet_resnet([3, 4, 23, 3], Bottleneck, **_plain(kwargs))


@register_model(**_tags("imagenet", "preact_bottleneck"))
def preact_resnet101(**kwargs: Any) -> nn.Module:
    """Pre-activation ResNet-101 for ImageNet (He et al. 2016)."""
    return imagenet_resnet([3, 4, 23, 3], PreActBottleneck, **kwargs)


@register_model(**_tags("imagenet", "bottleneck", group="resnet-d"))
def resnet101d(**kwargs: Any) -> nn.Module:
    """ResNet-101-D: deep stem and average-pool downsampling (He et al. 2019, sec. 4.1)."""
    return imagenet_resnet([3, 4, 23, 3], Bottleneck, **{"deep_stem": True, "avg_down": True, **kwargs})


@register_model(**_tags("imagenet", "bottleneck"))
def resnet152(**kwargs: Any) -> nn.Module:
    """ResNet-152 for ImageNet (He et al. 2015, table 1)."""
    return imagenet_resnet([3, 8, 36, 3], Bottleneck, **kwargs)


@register_model(**_tags("imagenet", "bottleneck", residual=False))
def plain152(**kwargs: Any) -> nn.Module:
    """ResNet-152 for ImageNet (He et al. 2015, table 1).
    Plain twin: no skip connections."""
    return imagenet_resnet([3, 8, 36, 3], Bottleneck, **_plain(kwargs))


@register_model(**_tags("imagenet", "preact_bottleneck"))
def preact_resnet152(**kwargs: Any) -> nn.Module:
    """Pre-activation ResNet-152 for ImageNet (He et al. 2016)."""
    return imagenet_resnet([3, 8, 36, 3], PreActBottleneck, **kwargs)


# Zagoruyko & Komodakis 2016, table 1 / 4.

@register_model(**_tags("wide", "preact_basic", depth=16))
def wrn16_8(**kwargs: Any) -> nn.Module:
    """WRN-16-8 (Zagoruyko & Komodakis 2016)."""
    return wide_resnet(16, 8, PreActBasicBlock, **kwargs)


@register_model(**_tags("wide", "preact_basic", depth=16, residual=False))
def plain_wrn16_8(**kwargs: Any) -> nn.Module:
    """WRN-16-8 (Zagoruyko & Komodakis 2016).
    Plain twin: no skip connections."""
    return wide_resnet(16, 8, PreActBasicBlock, **_plain(kwargs))


@register_model(**_tags("wide", "preact_basic", depth=28))
def wrn28_10(**kwargs: Any) -> nn.Module:
    """WRN-28-10 (Zagoruyko & Komodakis 2016)."""
    return wide_resnet(28, 10, PreActBasicBlock, **kwargs)


@register_model(**_tags("wide", "preact_basic", depth=28, residual=False))
def plain_wrn28_10(**kwargs: Any) -> nn.Module:
    """WRN-28-10 (Zagoruyko & Komodakis 2016).
    Plain twin: no skip connections."""
    return wide_resnet(28, 10, PreActBasicBlock, **_plain(kwargs))


@register_model(**_tags("wide", "preact_basic", depth=40))
def wrn40_4(**kwargs: Any) -> nn.Module:
    """WRN-40-4 (Zagoruyko & Komodakis 2016)."""
    return wide_resnet(40, 4, PreActBasicBlock, **kwargs)


@register_model(**_tags("wide", "preact_basic", depth=40, residual=False))
def plain_wrn40_4(**kwargs: Any) -> nn.Module:
    """WRN-40-4 (Zagoruyko & Komodakis 2016).
    Plain twin: no skip connections."""
    return wide_resnet(40, 4, PreActBasicBlock, **_plain(kwargs))


# The dense residual block of the MLP-ResNet, for tables.

@register_model(**_tags("mlp", "dense"))
def mlp_resnet(**kwargs: Any) -> nn.Module:
    """MLP-ResNet: one input Dense(1024), then purely residual blocks
    x + [Dropout -> Dense(512) -> Dense(1024)](x), head."""
    return MLPResNet(**kwargs)


@register_model(**_tags("mlp", "dense", residual=False))
def plain_mlp(**kwargs: Any) -> nn.Module:
    """MLP-ResNet without skip connections (the plain twin of ``mlp_resnet``)."""
    return MLPResNet(**_plain(kwargs))
