"""resnetlab: residual networks on PyTorch.

Build ResNets and their plain twins, train them on real data, study why skip connections work,
transfer and ship them.  The one way to name a model is the registry::

    import resnetlab
    model = resnetlab.create_model("resnet20", in_chans=1, num_classes=10)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "model_info", "register_model", "__version__"]


def __getattr__(name: str) -> Any:
    # Loaded on first use so that `import resnetlab` (and `resnetlab --help`) does not import
    # torch; the registry lives in resnetlab.models, next to the builders it lists.
    if name in ("create_model", "list_models", "model_info", "register_model"):
        from resnetlab import models

        return getattr(models, name)
    raise AttributeError(f"module 'resnetlab' has no attribute {name!r}")
