"""ONNX export with preprocessing metadata, and an ONNX Runtime backend for prediction.

The exported graph has one input ``input`` (N, C, H, W) and one output ``logits`` (N, K) with a
dynamic batch dimension.  Everything prediction needs besides the graph (channels, size, mean/std,
class names, model arguments, verification result) is one JSON document stored in the model's
``metadata_props`` under the key ``resnetlab``, so an ``.onnx`` file travels alone.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resnetlab.utils.errors import ConfigError, DataError

__all__ = ["META_KEY", "export_onnx", "read_onnx_meta", "write_onnx_meta", "OnnxBackend",
           "onnx_input_shape", "require_onnx"]

META_KEY = "resnetlab"
OPSET = 17  # supported by every onnxruntime >= 1.14 and by its int8 quantiser


def require_onnx() -> None:
    """One line telling how to install the ``onnx`` extra when onnx/onnxruntime are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"ONNX needs the onnx extra ({err.name} is not installed): "
                          "pip install 'resnetlab[onnx]'") from None


def export_onnx(model: nn.Module, sample: torch.Tensor, path: str | os.PathLike,
                meta: dict[str, Any]) -> Path:
    """Write ``model`` (eval mode, CPU, float32) as ONNX with a dynamic batch and ``meta``."""
    require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # the TorchScript-based exporter is the one that needs no onnxscript; its deprecation
        # and constant-folding notes say nothing the user can act on
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (sample,), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"], opset_version=OPSET,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    write_onnx_meta(path, meta)
    return path


def write_onnx_meta(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Store ``meta`` as JSON under ``metadata_props['resnetlab']`` (replacing an older one)."""
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta, sort_keys=True)
    onnx.save(proto, str(path))


def read_onnx_meta(session_or_path: Any) -> dict[str, Any] | None:
    """The resnetlab metadata of an ONNX model (a path or an InferenceSession), or None."""
    session = (session_or_path if hasattr(session_or_path, "get_modelmeta")
               else _session(session_or_path))
    text = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def onnx_input_shape(session: Any) -> list[int | str | None]:
    """The first input's shape: ints for static dimensions, names or None for dynamic ones."""
    return list(session.get_inputs()[0].shape)


def _session(path: str | os.PathLike, threads: int | None = None) -> Any:
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a loadable ONNX model ({first[:200]})") from None


class OnnxBackend:
    """Runs an ONNX model in onnxruntime on the CPU: float32 NCHW batch -> float32 logits."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        self.session = _session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        first = onnx_input_shape(self.session)[0]
        self.static_batch = first if isinstance(first, int) and first > 0 else None

    @property
    def meta(self) -> dict[str, Any] | None:
        return read_onnx_meta(self.session)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        if self.static_batch is None:
            return self._run(array)
        # a foreign model with a fixed batch: feed it whole batches, zero-padding the last
        b, n = self.static_batch, len(array)
        padded = np.zeros((-(-n // b) * b, *array.shape[1:]), np.float32)
        padded[:n] = array
        return torch.cat([self._run(padded[i:i + b]) for i in range(0, len(padded), b)])[:n]

    def _run(self, array: np.ndarray) -> torch.Tensor:
        logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(np.asarray(logits, dtype=np.float32))
