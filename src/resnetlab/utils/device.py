"""Device and precision are decided once, at the entry point (DESIGN.md, style point 5)."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

from resnetlab.utils.errors import ConfigError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else mps, else cpu; otherwise the named device.

    A device this machine lacks (``mps`` off a Mac, ``cuda`` without a GPU, ``cuda:3`` on a
    two-GPU machine) is a :class:`ConfigError` naming ``--device``.
    """
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"--device {spec!r} is not a device (try auto, cpu, cuda, cuda:1, mps)") from None
    _check_available(device, spec)
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def _check_available(device: torch.device, spec: str) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {spec}: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not _mps_available():
            raise ConfigError(f"--device {spec}: Apple MPS is not available on this machine "
                              "(it needs Apple silicon and a torch build with MPS; use --device cpu)")
    elif device.type != "cpu":
        backend = getattr(torch, device.type, None)  # e.g. torch.xpu
        if not (backend and hasattr(backend, "is_available") and backend.is_available()):
            raise ConfigError(f"--device {spec}: not available here; choose auto, cpu, cuda or mps")


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


def threads_per_process(processes: int) -> int:
    """This machine's cores shared out between ``processes`` local processes (at least one
    thread each): what each sweep worker, serving worker, torchrun rank or ``compare --jobs``
    member gets, so that together they do not oversubscribe the CPU."""
    return max(1, (os.cpu_count() or 1) // max(1, processes))


def cpu_model() -> str:
    """The CPU's marketing name (``AMD EPYC ...``), recorded beside every timing because a number
    measured on one CPU class (AMX, AVX2) says nothing about another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: platform's answer is the best there is
    return platform.processor() or platform.machine()
