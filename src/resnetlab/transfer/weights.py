"""Weight files users already have: read them safely, recognise their layout, load them exactly.

Layouts recognised by content (never by file name):

* ``resnetlab``/``torchvision``/``timm``: ``conv1, bn1, layer1.0..., fc``; our ImageNet-family
  keys are torchvision's, so these need no renaming;
* ``cifar-reimpl``: the popular CIFAR ResNet-20..1202 reimplementation (files ending ``.th``):
  head named ``linear``, parameter-free option-A shortcuts that put half of the zero channels
  *before* the identity channels (``shortcut_pad="split"``), or ``shortcut.0/1`` projections;
* any of them wrapped (``{"state_dict": ...}``, ``{"model": ...}``) or prefixed (``module.`` from
  DataParallel/DDP, ``_orig_mod.`` from ``torch.compile``).

Security: safetensors files are read as tensors; torch files (zip or legacy pickle) only through
``torch.load(weights_only=True)``.  A refused file gets one line saying why and how to re-save
it; torch's own advice (a full unpickle) is never passed on.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.checkpoint import detect_layout, fill_untracked, sniff_weights_format, to_our_keys
from resnetlab.layers.shortcut import ZeroPadShortcut
from resnetlab.utils.errors import DataError
from resnetlab.utils.files import file_sha256
from resnetlab.utils.safeload import load_torch_file

__all__ = ["WeightsFile", "read_weights", "read_state_dict", "detect_layout", "check_fit",
           "load_weights", "file_sha256"]

_CONTAINER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module",
                   "model_ema", "ema")
_PREFIXES = ("module.", "_orig_mod.", "model.")  # DDP, torch.compile, Lightning-style wrappers
_RESAVE = ("if you trust where it came from, re-save only its tensors where it was made "
           "(safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')) and use that")


@dataclass
class WeightsFile:
    """A weights file read into our key layout.

    ``model_args`` are the ``create_model`` arguments the layout implies (e.g.
    ``{"shortcut_pad": "split"}``); ``meta`` is a resnetlab header (model, classes, data), if any.
    """

    path: Path
    state: dict[str, torch.Tensor]
    layout: str
    model_args: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def sniff_format(path: Path) -> str:
    """``"safetensors"``, ``"torch-zip"`` or ``"torch-pickle"``, from the first bytes."""
    kind = sniff_weights_format(path)
    if kind == "unknown":
        raise DataError(f"{path}: unknown weights format (neither safetensors nor a torch zip or "
                        "pickle file); export the weights with safetensors or torch.save")
    return kind


def _refusal(path: Path, err: Exception) -> DataError:
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    what = f" (first: {found.group(1)})" if found else ""
    return DataError(f"{path}: refused: it holds Python objects besides tensors{what}, and "
                     f"unpickling them could run code, so resnetlab is refusing to unpickle it; "
                     f"{_RESAVE}")


def _torch_load(path: Path) -> object:
    try:
        return load_torch_file(path)  # weights-only, size-capped before anything inflates
    except DataError:
        raise
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        # Keep torch's first line only, and never its advice to unpickle without limits.
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        reason = type(err).__name__ if "weights_only" in first else first[:160]
        raise DataError(f"{path}: not a readable torch file ({reason})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import json

    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise DataError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        meta = json.loads(header.get("resnetlab") or "{}")
    except json.JSONDecodeError:
        raise DataError(f"{path}: its resnetlab metadata is not valid JSON") from None
    return state, meta if isinstance(meta, dict) else {}


def _find_state_dict(obj: object) -> dict[str, torch.Tensor] | None:
    if not isinstance(obj, Mapping):
        return None
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return dict(obj)
    for key in _CONTAINER_KEYS:
        found = _find_state_dict(obj.get(key))
        if found is not None:
            return found
    return None


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop prefixes every key shares, repeatedly (``module._orig_mod.`` nests two wrappers)."""
    while state and (prefix := next((p for p in _PREFIXES if all(k.startswith(p) for k in state)),
                                    None)):
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A weights file as a flat, unwrapped, de-prefixed state_dict plus its resnetlab meta."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such weights file")
    if sniff_format(path) == "safetensors":
        state, meta = _read_safetensors(path)
    else:
        obj, meta = _torch_load(path), {}
        state = _find_state_dict(obj)
        if state is None:
            raise DataError(f"{path}: no state_dict inside (looked at the top level and under "
                            f"{', '.join(map(repr, _CONTAINER_KEYS))})")
    return _strip_prefixes(state), meta


def read_weights(path: str | Path) -> WeightsFile:
    """Read ``path`` safely, detect its layout and rename its keys to ours."""
    path = Path(path)
    state, meta = read_state_dict(path)
    layout, args = detect_layout(state)
    if meta.get("model"):
        layout = "resnetlab"
    return WeightsFile(path, to_our_keys(state, layout), layout, args, meta)


def _listing(keys: list[str], limit: int = 5) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_fit(path: Path, own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
              strict: bool) -> None:
    """Raise one line when ``state`` cannot load into a model whose state_dict is ``own``.

    Shapes must always agree; ``strict`` also wants the same key set, and names what differs.
    """
    shapes = [f"{k} has shape {tuple(v.shape)} in the file but {tuple(own[k].shape)} in the "
              "model" for k, v in state.items() if k in own and own[k].shape != v.shape]
    if shapes:
        hint = ("; pass drop_head=True (or another --num-classes) to keep the model's head"
                if all(s.startswith("fc.") for s in shapes) else
                "; is this file for another architecture or width?")
        raise DataError(f"{path}: {'; '.join(shapes[:3])}{hint}")
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise DataError(f"{path}: {len(missing)} keys missing from the file"
                        f"{': ' + _listing(missing) if missing else ''}; {len(unexpected)} "
                        f"unexpected{': ' + _listing(unexpected) if unexpected else ''}; is "
                        "this file for another model? (non-strict loading keeps the overlap)")
    if not strict and len(missing) == len(own):
        raise DataError(f"{path}: no key of the file is in the model (file: "
                        f"{_listing(list(state), 3)}); is it for another architecture?")


def _check_padding(path: Path, model: nn.Module, weights: WeightsFile) -> None:
    want = weights.model_args.get("shortcut_pad")
    pads = {m.pad for m in model.modules() if isinstance(m, ZeroPadShortcut)}
    if want and pads and pads != {want}:
        raise DataError(f"{path}: these weights were trained with option-A zero channels "
                        f"{want!r} ({weights.layout}) but the model pads {pads.pop()!r}; build it "
                        f"with shortcut_pad={want!r} (resnetlab.transfer.load_pretrained does)")


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True,
                 drop_head: bool = False) -> list[str]:
    """Load a weights file into ``model`` in place; returns the model keys left as they were.

    ``drop_head=True`` skips the file's classifier (``fc.*``): the way to start fine-tuning
    ImageNet weights on a task with another number of classes.
    """
    weights = read_weights(path)
    _check_padding(weights.path, model, weights)
    own = model.state_dict()
    state = fill_untracked(own, weights.state, weights.path)
    expected = own
    if drop_head:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        expected = {k: v for k, v in own.items() if not k.startswith("fc.")}
    check_fit(weights.path, expected, state, strict)
    model.load_state_dict(state, strict=False)
    return sorted(set(own) - set(state))
