"""Building blocks below the models: conv-norm-act, shortcuts, stochastic depth, pooling, head.

Layer *types* (``norm_layer``, ``act_layer``) are passed in, never chosen by string deep inside.
"""

from resnetlab.layers.checks import (
    check_choice,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_rate,
)
from resnetlab.layers.conv import ConvNormAct, LayerType, conv_layer, make_act
from resnetlab.layers.drop import DropPath, drop_path, stochastic_depth_rates
from resnetlab.layers.head import make_classifier
from resnetlab.layers.pool import POOL_TYPES, GlobalPool, create_pool2d
from resnetlab.layers.shortcut import (
    SHORTCUTS,
    ProjectionShortcut,
    ZeroPadShortcut,
    make_shortcut,
    parse_shortcut,
)

__all__ = [
    "ConvNormAct", "LayerType", "conv_layer", "make_act",
    "DropPath", "drop_path", "stochastic_depth_rates",
    "make_classifier", "POOL_TYPES", "GlobalPool", "create_pool2d",
    "SHORTCUTS", "ProjectionShortcut", "ZeroPadShortcut", "make_shortcut", "parse_shortcut",
    "check_choice", "check_non_negative", "check_positive", "check_positive_int", "check_rate",
]
