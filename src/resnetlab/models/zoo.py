"""Every registered model name.  Each row sets block, depths and widths; nothing else.

Every builder takes the same keyword arguments (``num_classes``, ``in_chans`` or
``in_features``, ``drop_rate``, ``drop_path_rate``, ``zero_init_last``, ``residual``,
``shortcut``, ``width_mult``, ``norm_layer``, ``act_layer``; ImageNet builders also ``variant``,
``deep_stem``, ``avg_down``).  ``plain*`` names are the same builders with ``residual=False``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from resnetlab.models.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from resnetlab.models.mlp import MLPResNet
from resnetlab.models.resnet import ResNet, cifar_resnet, imagenet_resnet, wide_resnet
from resnetlab.registry import register_model
from resnetlab.utils.errors import ConfigError

__all__ = ["IMAGE_KWARGS", "MLP_KWARGS"]

# Structure is fixed by the name; everything else is an option of every image builder.
_STRUCTURAL = {"block", "layers", "widths", "stem_type", "stem_width", "stem_norm_act",
               "default_input_size"}


def _kwarg_names(fn: Callable) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


IMAGE_KWARGS = frozenset(_kwarg_names(ResNet.__init__) - _STRUCTURAL - {"self"})
IMAGENET_KWARGS = IMAGE_KWARGS | {"deep_stem"}
MLP_KWARGS = frozenset(_kwarg_names(MLPResNet.__init__) - {"self"})


def _register(name: str, build: Callable[..., nn.Module], accepted: frozenset[str], doc: str,
              *, residual: bool = True, **tags: Any) -> None:
    """Register ``build`` under ``name``; unknown keyword arguments become a ``ConfigError``."""

    def builder(**kwargs: Any) -> nn.Module:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ConfigError(f"{name}: unknown argument {unknown[0]!r}; accepted: "
                              f"{', '.join(sorted(accepted))}")
        if not residual:
            kwargs.setdefault("residual", False)
        return build(**kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc + ("" if residual else " Plain twin: no skip connections.")
    register_model(builder, name=name, residual=residual, **tags)


def _twins(name: str, plain_name: str | None, build: Callable[..., nn.Module],
           accepted: frozenset[str], doc: str, **tags: Any) -> None:
    _register(name, build, accepted, doc, **tags)
    if plain_name:
        _register(plain_name, build, accepted, doc, residual=False, **tags)


_CIFAR = dict(family="cifar", input_kind="image", input_size=(3, 32, 32))
_IMAGENET = dict(family="imagenet", input_kind="image", input_size=(3, 224, 224))

# He et al. 2015, sec. 4.2: 6n+2 layers, option A shortcuts.
for _depth in (20, 32, 44, 56, 110, 1202):
    _twins(f"resnet{_depth}", f"plain{_depth}", partial(cifar_resnet, _depth, BasicBlock),
           IMAGE_KWARGS, f"ResNet-{_depth} for CIFAR (He et al. 2015, sec. 4.2).",
           block="basic", **_CIFAR)

# He et al. 2016: pre-activation; the bottleneck nets used 1x1 projections (option B).
for _depth in (20, 56, 110):
    _register(f"preact_resnet{_depth}", partial(cifar_resnet, _depth, PreActBasicBlock),
              IMAGE_KWARGS, f"Pre-activation ResNet-{_depth} for CIFAR (He et al. 2016).",
              block="preact_basic", **_CIFAR)
for _depth in (164, 1001):
    _register(f"preact_resnet{_depth}",
              partial(cifar_resnet, _depth, PreActBottleneck, shortcut="B"), IMAGE_KWARGS,
              f"Pre-activation bottleneck ResNet-{_depth} for CIFAR (He et al. 2016, table 2).",
              block="preact_bottleneck", **_CIFAR)

# He et al. 2015, table 1 (torchvision layout and parameter counts).
_IMAGENET_LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
                    152: [3, 8, 36, 3]}
for _depth, _layers in _IMAGENET_LAYERS.items():
    _post, _pre = (BasicBlock, PreActBasicBlock) if _depth < 50 else (Bottleneck, PreActBottleneck)
    _twins(f"resnet{_depth}", f"plain{_depth}", partial(imagenet_resnet, _layers, _post),
           IMAGENET_KWARGS, f"ResNet-{_depth} for ImageNet (He et al. 2015, table 1).",
           block=_post.kind, **_IMAGENET)
    _register(f"preact_resnet{_depth}", partial(imagenet_resnet, _layers, _pre),
              IMAGENET_KWARGS, f"Pre-activation ResNet-{_depth} for ImageNet (He et al. 2016).",
              block=_pre.kind, **_IMAGENET)
    if _depth <= 101:
        _register(f"resnet{_depth}d",
                  partial(imagenet_resnet, _layers, _post, deep_stem=True, avg_down=True),
                  IMAGENET_KWARGS, f"ResNet-{_depth}-D: deep stem and average-pool downsampling "
                  "(He et al. 2019, sec. 4.1).", block=_post.kind, **_IMAGENET)

# Zagoruyko & Komodakis 2016, table 1 / 4.
for _depth, _k in ((16, 8), (28, 10), (40, 4)):
    _twins(f"wrn{_depth}_{_k}", f"plain_wrn{_depth}_{_k}",
           partial(wide_resnet, _depth, _k, PreActBasicBlock), IMAGE_KWARGS,
           f"WRN-{_depth}-{_k} (Zagoruyko & Komodakis 2016).", block="preact_basic",
           family="wide", input_kind="image", input_size=(3, 32, 32))

_twins("mlp_resnet", "plain_mlp", MLPResNet, MLP_KWARGS,
       "MLP-ResNet: input projection, dense residual blocks "
       "Dense(1024) -> [Dropout -> Dense(512) -> Dense(1024)] -> Add, head.",
       block="dense", family="mlp", input_kind="vector", input_size=(784,))
