"""Device, precision and determinism, decided once per run (DESIGN.md, style point 5)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from resnetlab.engine import distributed
from resnetlab.engine.config import TrainConfig
from resnetlab.utils.device import resolve_device, resolve_dtype
from resnetlab.utils.seed import seed_everything

__all__ = ["Runtime", "prepare_runtime", "to_device", "global_flags", "restore_flags"]


@dataclass
class Runtime:
    """Device, autocast dtype and process placement, decided once per run."""

    device: torch.device
    dtype: torch.dtype
    channels_last: bool = True
    dist: distributed.DistInfo = field(default_factory=distributed.DistInfo)


def prepare_runtime(cfg: TrainConfig) -> Runtime:
    """Resolve device/precision, set determinism and seed the global generators.

    ``deterministic`` turns on ``torch.use_deterministic_algorithms`` (and cuDNN's deterministic
    kernels); otherwise cuDNN may benchmark convolution algorithms, which is faster but picks
    kernels by timing.  Each rank seeds with ``seed + rank`` so dropout masks differ across ranks.
    """
    info = distributed.dist_info()
    device = resolve_device(cfg.device)
    if info.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if cfg.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    torch.use_deterministic_algorithms(cfg.deterministic)
    torch.backends.cudnn.deterministic = cfg.deterministic
    torch.backends.cudnn.benchmark = not cfg.deterministic
    seed_everything(cfg.seed + info.rank)
    return Runtime(device, resolve_dtype(cfg.precision, device), cfg.channels_last, info)


def to_device(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """``x`` on the run's device, channels_last for image batches when the run uses it."""
    fmt = torch.channels_last if rt.channels_last and x.dim() == 4 else torch.preserve_format
    return x.to(rt.device, non_blocking=True, memory_format=fmt)


def global_flags() -> tuple[bool, bool, bool]:
    """The process's determinism settings, to put back after a run changed them."""
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark)


def restore_flags(flags: tuple[bool, bool, bool]) -> None:
    """Put back the caller's determinism settings: a run must not change them for the process."""
    torch.use_deterministic_algorithms(flags[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1], flags[2]
