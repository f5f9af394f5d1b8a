"""The model zoo: residual blocks, ResNets (CIFAR, ImageNet, pre-activation, wide, ResNet-D), the
MLP-ResNet, and their plain twins.  Importing this package registers every builder; use
``resnetlab.create_model(name, **kwargs)`` and ``resnetlab.list_models()``."""

from resnetlab.models import zoo  # noqa: F401  (registers the builders)
from resnetlab.models.blocks import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResidualBlock,
)
from resnetlab.models.mlp import DenseBlock, DenseResidualBlock, MLPResNet
from resnetlab.models.registry import (
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
)
from resnetlab.models.resnet import ResNet, cifar_resnet, imagenet_resnet, wide_resnet
from resnetlab.models.summary import count_macs, count_parameters, model_summary, weight_depth

__all__ = [
    "create_model", "list_models", "model_info", "register_model", "UnknownModelError",
    "ResidualBlock", "BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck",
    "DenseBlock", "DenseResidualBlock", "MLPResNet", "ResNet", "cifar_resnet", "imagenet_resnet",
    "wide_resnet", "count_macs", "count_parameters", "model_summary", "weight_depth",
]
