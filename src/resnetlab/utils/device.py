"""Device and precision are decided once, at the entry point (DESIGN.md, style point 5)."""

from __future__ import annotations

import contextlib

import torch

from resnetlab.utils.errors import ConfigError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else mps, else cpu; otherwise the named device."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(f"--device {spec!r} is not a device (try auto, cpu, cuda, cuda:1)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
    return device


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN can run bf16 convolutions natively (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """Autocast dtype for ``--precision``: fp32, bf16, fp16, or auto.

    auto: bf16 on CUDA with bf16 support and on CPUs with native bf16 (about 2x faster there),
    fp16 on older CUDA GPUs, fp32 otherwise.
    """
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    if spec not in _DTYPES:
        raise ConfigError(f"--precision {spec!r}: choose one of auto, {', '.join(_DTYPES)}")
    if spec == "fp16" and device.type == "cpu":
        raise ConfigError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return _DTYPES[spec]


def autocast(device: torch.device, dtype: torch.dtype):
    """The one autocast context of the project: a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
