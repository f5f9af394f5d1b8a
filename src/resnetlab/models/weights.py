"""Weight files users already have: torchvision / timm ResNets, DDP or torch.compile wrappers.

Our ImageNet-family layout matches torchvision (and timm's ``resnet*d``), so importing needs no
renaming, only unwrapping: a ``{"state_dict": ...}`` or ``{"model": ...}`` container and a
prefix that every key shares (``module.`` from DDP, ``_orig_mod.`` from ``torch.compile``).

Security: ``.safetensors`` is read as tensors; ``.pt/.pth/.bin`` only with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from resnetlab.utils.errors import DataError

__all__ = ["read_state_dict", "load_weights"]

_CONTAINER_KEYS = ("state_dict", "model", "model_state", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.", "model.")  # DDP, torch.compile, Lightning-style wrappers
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _load_file(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise DataError(f"{path}: not a readable safetensors file ({err})") from err
    if path.suffix in _TORCH_SUFFIXES:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise DataError(f"{path}: holds objects other than tensors; refusing to unpickle it "
                            "(convert it to .safetensors where you trust its origin)") from err
        except (RuntimeError, EOFError, OSError) as err:
            raise DataError(f"{path}: not a readable torch file ({err})") from err
    raise DataError(f"{path}: unknown weights format {path.suffix!r}; use .safetensors, .pt "
                    "or .pth")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{key: tensor}`` dict, unwrapped and de-prefixed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such weights file")
    state = _load_file(path)
    while isinstance(state, dict) and (key := next(
            (k for k in _CONTAINER_KEYS if isinstance(state.get(k), dict)), None)):
        state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a dict of tensors (a state_dict)")
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _check_compatible(path: Path, state: dict, own: dict, strict: bool) -> None:
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            hint = "; pass drop_head=True to keep the model's new head" if key.startswith(
                "fc.") else "; is this file for a different model or width?"
            raise DataError(f"{path}: {key} has shape {tuple(tensor.shape)} in the file but "
                            f"{tuple(own[key].shape)} in the model{hint}")
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise DataError(
            f"{path}: {len(missing)} keys missing from the file (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); is this file for a different "
            "model? (strict=False loads the overlap)")


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True,
                 drop_head: bool = False) -> list[str]:
    """Load a weights file into ``model`` in place; returns the model keys left as they were.

    ``drop_head=True`` skips the file's classifier (``fc.*``): the way to start fine-tuning
    ImageNet weights on a task with another number of classes.
    """
    path = Path(path)
    state, own = read_state_dict(path), model.state_dict()
    expected = own
    if drop_head:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        expected = {k: v for k, v in own.items() if not k.startswith("fc.")}
    _check_compatible(path, state, expected, strict)
    model.load_state_dict(state, strict=False)
    return sorted(set(own) - set(state))
