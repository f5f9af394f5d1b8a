"""int8 static post-training quantisation of an exported ONNX model (onnxruntime's quantiser).

QDQ format (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into int8 kernels),
per-channel symmetric int8 weights, uint8 activations (the u8s8 pairing that x86 VNNI/AVX2 int8
dot products take natively; onnxruntime docs, "Quantize ONNX models", "data type selection"), and
min/max activation ranges from calibration batches of real training images.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from resnetlab.deploy.onnx import read_onnx_meta, require_onnx, write_onnx_meta

__all__ = ["quantize_int8"]


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a list of float32 batches."""

    def __init__(self, input_name: str, batches: Iterable[torch.Tensor]):
        self._feeds = iter([{input_name: np.ascontiguousarray(b.cpu().numpy(), np.float32)}
                            for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the protocol; we calibrate in one pass
        pass


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration: Iterable[torch.Tensor]) -> Path:
    """Write the int8 (QDQ, per-channel) version of ``fp32_path`` to ``out_path``.

    ``calibration``: preprocessed float32 batches from the training data (a few hundred images
    are enough for min/max ranges).  The fp32 model's resnetlab metadata is carried over.
    """
    require_onnx()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    meta = read_onnx_meta(fp32_path) or {}
    with tempfile.TemporaryDirectory() as tmp:
        # shape inference + graph clean-up first, as the quantiser's docs ask
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        import onnx

        input_name = onnx.load(str(prepared)).graph.input[0].name
        quantize_static(str(prepared), str(out_path), _Batches(input_name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    write_onnx_meta(out_path, {**meta, "precision": "int8"})
    return out_path
