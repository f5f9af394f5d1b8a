"""Shipping trained networks: verified export (ONNX, TorchScript, safetensors), BatchNorm
folding, int8 quantisation, and prediction through PyTorch or onnxruntime."""

from resnetlab.deploy.predictor import (
    BACKENDS,
    RUNTIMES,
    Backend,
    LoadedModel,
    Prediction,
    Predictor,
    TorchBackend,
    load_model,
    load_predictor,
)
from resnetlab.layers.fold import fold_bn

__all__ = [
    "BACKENDS", "RUNTIMES", "Backend", "LoadedModel", "Prediction", "Predictor", "TorchBackend",
    "fold_bn", "load_model", "load_predictor",
]
