"""One checkpoint format: safetensors weights + JSON state, written atomically.

A checkpoint is a directory::

    model.safetensors        the model's state_dict, keys exactly the model's (so ImageNet
                             models keep torchvision keys); ``meta`` is also in its header
    meta.json                model build arguments, class list, data meta, epoch/step/metrics
    train_state.safetensors  optimiser / scaler / EMA tensors and RNG states (resume only)
    train_state.json         the rest of the training state, tensors replaced by references

Nothing is pickled: tensors go to safetensors, everything else to JSON.  ``.pt``/``.pth`` files
from elsewhere are read only through ``torch.load(weights_only=True)``.

Atomicity: a save writes ``.NAME.tmp-PID/`` (each file fsynced), renames the old ``NAME`` to
``.NAME.old``, renames the new one into place and deletes the old one.  A crash at any point
leaves either ``NAME`` or ``.NAME.old`` complete; :func:`load_checkpoint` falls back to the
latter, so the previous checkpoint stays loadable.

Refusals: a save whose floating-point tensors hold NaN/inf writes nothing
(:class:`NonFiniteError`), so a "last" or "best" checkpoint is always finite; a full or read-only
disk is a one-line :class:`StorageError` naming the checkpoint, and the previous one survives.
A damaged ``meta.json`` or ``train_state.json`` is a :class:`DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from resnetlab.utils.errors import DataError, NonFiniteError, storage_error

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "resolve_checkpoint_dir",
           "read_meta", "nonfinite_tensors", "encode_state", "decode_state"]

FORMAT = "resnetlab-checkpoint"
FORMAT_VERSION = 1
WEIGHTS, META, STATE_TENSORS, STATE_JSON = (
    "model.safetensors", "meta.json", "train_state.safetensors", "train_state.json")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile


@dataclass
class Checkpoint:
    """A loaded checkpoint: CPU tensors, the training state (or None) and the meta dict."""

    model_state: dict[str, torch.Tensor]
    train_state: dict[str, Any] | None
    meta: dict[str, Any]
    path: Path

    def load_into(self, model: nn.Module, strict: bool = True) -> nn.Module:
        """Copy the weights into ``model``; a mismatch is one line naming the keys."""
        problems = state_mismatch(model.state_dict(), self.model_state, strict)
        if problems:
            raise DataError(f"checkpoint {self.path} does not fit this model: {problems}; "
                            "build the model with the checkpoint's arguments (meta['model'])")
        model.load_state_dict(self.model_state, strict=strict)
        return model


def state_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor],
                   strict: bool = True) -> str:
    """Empty string when ``got`` loads into a model whose state_dict is ``expected``."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in got and tuple(got[k].shape) != tuple(v.shape)]
    parts = [f"shape {', '.join(shapes[:3])}" if shapes else ""]
    if strict:
        parts += [_listing("missing", missing), _listing("unexpected", unexpected)]
    if any(".fc_in." in k or ".norm_in." in k for k in unexpected if k.startswith("layer1.")):
        # issue 23 moved the per-block input Dense of the MLP-ResNet into the stem: old files
        # hold one more Dense per block, a different network that no renaming can load
        parts.append("it is an MLP-ResNet saved before its blocks became purely residual "
                     "(resnetlab issue 23); retrain it")
    return "; ".join(p for p in parts if p)


def _listing(kind: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
    return f"{kind} {', '.join(keys[:3])}{more}"


# ----------------------------------------------------------------------------- saving


def save_checkpoint(dir: str | Path, *, model_state: Mapping[str, torch.Tensor],
                    train_state: dict[str, Any] | None = None, meta: dict[str, Any],
                    check_finite: bool = True) -> None:
    """Write a checkpoint directory atomically (see the module docstring).

    ``model_state`` is saved as-is (keys must be the model's own: pass the unwrapped module's
    ``state_dict()``).  ``meta`` must be JSON-serialisable.  Nothing is written, and the
    previous checkpoint at ``dir`` stays as it was, when a floating-point tensor (weights or
    training state) holds NaN/inf (:class:`NonFiniteError`, unless ``check_finite=False``) or
    when the disk is full or not writable (:class:`StorageError`).
    """
    dir = Path(dir)
    files = _serialise(dir, model_state, train_state, meta, check_finite)
    try:
        _write_atomically(dir, files)
    except OSError as err:
        raise storage_error(err, dir, "saving a checkpoint", note=_kept(dir)) from None


def _serialise(dir: Path, model_state: Mapping[str, torch.Tensor],
               train_state: dict[str, Any] | None, meta: dict[str, Any],
               check_finite: bool) -> dict[str, bytes]:
    """The checkpoint's files as bytes, so that a refusal happens before anything is written."""
    weights = {k: _to_saveable(v) for k, v in model_state.items()}
    tensors: dict[str, torch.Tensor] = {}
    encoded = encode_state(train_state, tensors) if train_state is not None else None
    if check_finite:
        _refuse_nonfinite(dir, weights, tensors)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    if train_state is not None:  # lets a load notice a train_state.json that lost keys
        header["train_state_keys"] = sorted(train_state)
    meta_text = json.dumps(header, indent=1, sort_keys=True)
    files = {WEIGHTS: safetensors.torch.save(weights, metadata={"resnetlab": meta_text}),
             META: meta_text.encode("utf-8")}
    if encoded is not None:
        files[STATE_TENSORS] = safetensors.torch.save(tensors)
        files[STATE_JSON] = json.dumps(encoded).encode("utf-8")
    return files


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or inf."""
    return [k for k, t in tensors.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _refuse_nonfinite(dir: Path, weights: Mapping[str, torch.Tensor],
                      state_tensors: Mapping[str, torch.Tensor]) -> None:
    bad = nonfinite_tensors(weights)
    bad_state = [k.removeprefix("s.") for k in nonfinite_tensors(state_tensors)]
    if not bad and not bad_state:
        return
    parts = [f"{len(bad)} of {len(weights)} weight tensors ({_names(bad)})" if bad else "",
             f"{len(bad_state)} training-state tensors ({_names(bad_state)})" if bad_state else ""]
    raise NonFiniteError(
        f"{dir}: checkpoint not saved: {' and '.join(p for p in parts if p)} hold NaN/inf, so "
        f"the training diverged (try a lower --lr, --clip-grad or --precision fp32); {_kept(dir)}")


def _kept(dir: Path) -> str:
    """What a failed save left at ``dir`` (an earlier checkpoint is never touched)."""
    return "the previous checkpoint there is unchanged" if resolve_checkpoint_dir(dir) else "nothing was written"


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" +{len(keys) - 3} more" if len(keys) > 3 else "")


def _write_atomically(dir: Path, files: Mapping[str, bytes]) -> None:
    dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(dir)
    tmp = dir.with_name(f".{dir.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir()
        for name, data in files.items():
            _write_file(tmp / name, data)
        _fsync(tmp)
        old = _old(dir)
        if dir.exists():
            os.replace(dir, old)
        os.replace(tmp, dir)
        _fsync(dir.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file.  Written here rather than by ``safetensors.save_file`` so a
    full disk surfaces as an ``OSError`` with its errno (ENOSPC), also from the fsync."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    path.chmod(0o644)  # runs are meant to be shared, whatever the umask


def _to_saveable(t: torch.Tensor) -> torch.Tensor:
    # safetensors refuses shared or strided storage; clone() also detaches from the live model
    return t.detach().to("cpu", copy=True).contiguous()


def _fsync(path: Path) -> None:
    """Flush a file or directory entry to disk (directories cannot be opened on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _old(dir: Path) -> Path:
    return dir.with_name(f".{dir.name}.old")


def _remove_stale(dir: Path) -> None:
    """Delete temp dirs of saves killed mid-write, and ``.old`` once ``dir`` is complete."""
    for stale in dir.parent.glob(f".{dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if (dir / WEIGHTS).exists():
        shutil.rmtree(_old(dir), ignore_errors=True)


# ------------------------------------------------------------------- state <-> json+tensors


def encode_state(obj: Any, tensors: dict[str, torch.Tensor], path: str = "s") -> Any:
    """Replace tensors/arrays in a nested structure by references into ``tensors``.

    Dicts with non-string keys (optimiser state is keyed by int) and tuples are tagged so that
    :func:`decode_state` restores them exactly.
    """
    if isinstance(obj, torch.Tensor):
        tensors[path] = _to_saveable(obj)
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        # uint32 (NumPy's MT19937 key) is widened: safetensors has no unsigned 32-bit type
        tensors[path] = torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj.copy())
        return {"__ndarray__": path, "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode_state(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, encode_state(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a checkpoint")


def decode_state(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`."""
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
    if "__tuple__" in obj:
        return tuple(decode_state(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: decode_state(v, tensors) for k, v in obj["__items__"]}
    return {k: decode_state(v, tensors) for k, v in obj.items()}


# ----------------------------------------------------------------------------- loading


def resolve_checkpoint_dir(path: str | Path) -> Path | None:
    """The checkpoint directory for a run dir or checkpoint dir (None if it holds none).

    A run directory gives ``checkpoints/best``, else ``checkpoints/last``; a checkpoint whose
    save was interrupted between its two renames gives its complete ``.NAME.old`` twin.
    """
    path = Path(path)
    if (path / "checkpoints").is_dir():
        for name in ("best", "last"):
            found = resolve_checkpoint_dir(path / "checkpoints" / name)
            if found:
                return found
        return None
    for candidate in (path, _old(path)):
        if (candidate / WEIGHTS).is_file():
            return candidate
    return None


def load_checkpoint(path: str | Path, *, train_state: bool = True) -> Checkpoint:
    """Load a run dir, checkpoint dir, ``.safetensors`` or ``.pt/.pth/.bin/.ckpt`` file.

    Tensors come back on the CPU.  ``train_state=False`` skips the optimiser state (faster
    for evaluation and prediction).  Files that are missing, unreadable or hold no state_dict
    raise :class:`DataError` naming the path.
    """
    path = Path(path)
    if path.is_dir() or (not path.exists() and _old(path).is_dir()):
        found = resolve_checkpoint_dir(path)
        if found is None:
            raise DataError(f"{path}: no checkpoint here (expected checkpoints/best, "
                            f"checkpoints/last or {WEIGHTS})")
        return _load_dir(found, train_state)
    if not path.exists():
        raise DataError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, train_state)
    if path.suffix in PICKLE_SUFFIXES:
        return _load_torch(path)
    raise DataError(f"{path}: unknown checkpoint type (use a run or checkpoint directory, "
                    f".safetensors, or {'/'.join(PICKLE_SUFFIXES)})")


def _load_dir(dir: Path, with_state: bool) -> Checkpoint:
    return _load_safetensors(dir / WEIGHTS, with_state)


def _load_safetensors(path: Path, with_state: bool) -> Checkpoint:
    header = _header(path)
    try:
        weights = safetensors.torch.load_file(str(path))
    except (OSError, safetensors.SafetensorError) as err:
        raise DataError(f"{path}: not a readable safetensors file ({err})") from None
    meta = _read_meta(path, header)
    state = None
    if with_state and path.name == WEIGHTS:
        state = _read_train_state(path.parent, meta.get("train_state_keys", []))
    return Checkpoint(_strip_prefixes(weights), state, meta, path.parent if path.name == WEIGHTS else path)


def _header(path: Path) -> Mapping[str, str]:
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (OSError, safetensors.SafetensorError) as err:
        raise DataError(f"{path}: not a readable safetensors file ({err})") from None


def read_meta(path: str | Path) -> dict[str, Any]:
    """The meta dict of a checkpoint directory or ``.safetensors`` file, without its tensors.

    A ``meta.json`` that is damaged (not JSON, not UTF-8, not a mapping) is a
    :class:`DataError` naming it, also when the weights' header holds a good copy.
    """
    path = Path(path)
    file = path / WEIGHTS if path.is_dir() else path
    return _read_meta(file, _header(file))


def _read_meta(path: Path, header: Mapping[str, str]) -> dict[str, Any]:
    """The header's copy of the meta, else a sidecar JSON file; every copy present must parse."""
    sidecars = [path.parent / META, path.with_suffix(".json")] if path.name == WEIGHTS else [path.with_suffix(".json")]
    copies = [_parse_meta(header["resnetlab"], f"{path} (header)")] if header.get("resnetlab") else []
    copies += [_parse_meta(_read_text(p), str(p)) for p in sidecars if p.is_file()]
    return copies[0] if copies else {}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable checkpoint metadata ({err}); restore it from a "
                        "backup or start a new run") from None


def _parse_meta(text: str, where: str) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise DataError(f"{where}: checkpoint metadata is not valid JSON ({err}); restore it "
                        "from a backup or start a new run") from None
    if not isinstance(meta, dict):
        raise DataError(f"{where}: checkpoint metadata is not a JSON object; restore it from a "
                        "backup or start a new run")
    return meta


def _read_train_state(dir: Path, expected: list[str]) -> dict[str, Any] | None:
    file = dir / STATE_JSON
    if not file.is_file():
        return None
    fix = f"restore it, or start a new run (the weights in {dir} still work for eval and predict)"
    try:
        tensors = safetensors.torch.load_file(str(dir / STATE_TENSORS))
        state = decode_state(json.loads(file.read_text(encoding="utf-8")), tensors)
    except (OSError, ValueError, KeyError, TypeError, safetensors.SafetensorError) as err:
        raise DataError(f"{file}: training state is damaged ({err}); {fix}") from None
    missing = [k for k in expected if k not in state] if isinstance(state, dict) else expected
    if not isinstance(state, dict) or not state or missing:
        what = f"missing {', '.join(missing)}" if missing else "it holds no training state"
        raise DataError(f"{file}: training state is damaged ({what}); {fix}")
    return state


def _load_torch(path: Path) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for anything beyond tensors and containers
        raise DataError(f"{path}: refused or unreadable as weights-only torch file "
                        f"({_refusal_reason(err)}); if you trust where it came from, re-save "
                        "only its tensors (safetensors.torch.save_file(model.state_dict(), "
                        "'w.safetensors')) or run `resnetlab convert`") from None
    state = _find_state_dict(obj)
    if state is None:
        raise DataError(f"{path}: no state_dict inside (looked at the top level and under "
                        "'state_dict', 'model', 'model_state_dict', 'module', 'ema')")
    return Checkpoint(_strip_prefixes(state), None, {}, path)


def _refusal_reason(err: Exception) -> str:
    """Why torch refused a file, without passing on torch's advice to unpickle it fully."""
    import pickle
    import re

    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        return (f"it holds Python objects besides tensors{f' ({found.group(1)})' if found else ''}"
                ", and unpickling them could run code")
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return type(err).__name__ if "weights_only" in first else first[:160]


def _find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
        for key in ("state_dict", "model", "model_state_dict", "module", "model_ema", "ema"):
            if key in obj:
                found = _find_state_dict(obj[key])
                if found is not None:
                    return found
    return None


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) key prefixes."""
    out = dict(state)
    stripped = True
    while stripped and out:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                stripped = True
    return out
