"""Shipping trained networks: prediction (torch backend; ONNX Runtime plugs in as a backend)."""

from resnetlab.deploy.predictor import (
    BACKENDS,
    Backend,
    LoadedModel,
    Prediction,
    Predictor,
    TorchBackend,
    load_model,
    load_predictor,
)

__all__ = [
    "BACKENDS", "Backend", "LoadedModel", "Prediction", "Predictor", "TorchBackend",
    "load_model", "load_predictor",
]
