"""The fully connected head."""

from __future__ import annotations

from torch import nn

from resnetlab.layers.checks import check_non_negative

__all__ = ["make_classifier"]


def make_classifier(num_features: int, num_classes: int) -> nn.Module:
    """``Linear(num_features, num_classes)``, or ``Identity`` for ``num_classes=0`` (the model
    then returns its pooled features, for embeddings and transfer learning)."""
    check_non_negative("num_classes", num_classes)
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
