"""Model facts for tables: parameters, multiply-accumulates, depth.

Models are built on the ``meta`` device and counted under ``FlopCounterMode``, so a table of
every model costs no real memory (ResNet-1202 included).  Building all 44 still takes Python
about 15 s on 2 CPU cores, so ``resnetlab models`` reads the rows from ``zoo_table.json``,
shipped with the package and written by :func:`write_zoo_table` (a test checks
that it equals :func:`zoo_rows` for every registered model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from resnetlab.models.registry import create_model, model_info

__all__ = ["count_parameters", "count_macs", "weight_depth", "model_summary", "zoo_rows",
           "write_zoo_table", "ZOO_TABLE"]

# The listing's rows, shipped as package data next to this file.
ZOO_TABLE = Path(__file__).with_name("zoo_table.json")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class _SkipNorms(TorchFunctionMode):
    """Return the input of every normalisation unchanged (same shape, no MACs counted).

    On the meta device PyTorch runs batch norm as a Python decomposition, which made counting
    ResNet-1202 take 2 s; norms add no multiply-accumulates to the count, so skip them.
    """

    _NORMS = frozenset({F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._NORMS:
            return args[0]
        return func(*args, **(kwargs or {}))


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """Multiply-accumulates of one eval-mode forward at ``(batch_size, *input_size)``.

    Counted by ``torch.utils.flop_counter`` over convolutions and matrix products (the ops that
    dominate; norms, activations and additions are left out, as in the papers' FLOP columns);
    MACs = FLOPs / 2.  Runs on whatever device the model is on; use ``meta`` to make it free.
    """
    ref = next(model.parameters())
    x = torch.zeros((batch_size, *input_size), device=ref.device, dtype=ref.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter, _SkipNorms():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def weight_depth(model: nn.Module) -> int:
    """Conv and linear layers on the main path (shortcut projections excluded): the number
    in a ResNet's name (ResNet-20 -> 20; ResNet-50-D's deep stem adds 2)."""
    skip_path = {id(m) for b in model.blocks() if getattr(b, "downsample", None) is not None
                 for m in b.downsample.modules()}
    return sum(1 for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in skip_path)


def model_summary(name: str, **kwargs: Any) -> dict[str, Any]:
    """One row of ``resnetlab models``: name, family, params, MACs at the default input size,
    depth, block type, shortcut, input size.  ``kwargs`` go to the builder."""
    info = model_info(name)
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return {
        "name": name,
        "family": info.get("family"),
        "groups": list(info.get("groups", [info.get("family")])),
        "params": count_parameters(model),
        "macs": count_macs(model, model.default_input_size),
        # a paper's own count where it differs (WRN-16-8: 6n+4 counts 2 projections)
        "depth": info.get("depth") or weight_depth(model),
        "block": model.block_type,
        "shortcut": model.shortcut,
        "residual": model.residual,
        "input_size": list(model.default_input_size),
    }




def zoo_rows() -> list[dict[str, Any]]:
    """:func:`model_summary` of every registered model, in ``list_models()`` order."""
    from resnetlab.models.registry import list_models

    return [model_summary(name) for name in list_models()]


def write_zoo_table() -> Path:
    """Refresh the shipped table after registering or changing a model::

        python -c "from resnetlab.models.summary import write_zoo_table; write_zoo_table()"
    """
    # Every builder is registered already: importing this module ran resnetlab/models/__init__.py
    # (which imports zoo); importing zoo here would break the models layers contract.
    ZOO_TABLE.write_text(json.dumps(zoo_rows(), indent=1) + "\n")
    return ZOO_TABLE
