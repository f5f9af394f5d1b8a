"""resnetlab: residual networks on PyTorch.

Build ResNets and their plain twins, train them on real data, study why skip connections work,
transfer and ship them.  The one way to name a model is the registry::

    import resnetlab
    model = resnetlab.create_model("resnet20", in_chans=1, num_classes=10)
"""

from resnetlab.registry import create_model, list_models, model_info, register_model

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "model_info", "register_model", "__version__"]
