"""Bottom-layer helpers: errors, seeding, device/precision resolution, timers."""

from __future__ import annotations

from typing import Any

from resnetlab.utils.errors import UserError

__all__ = [
    "UserError", "autocast", "resolve_device", "resolve_dtype",
    "seed_everything", "seeded_generator", "Timer",
]

# name -> submodule.  Imported on first use: `resnetlab.utils.errors` is needed by every
# command, including `resnetlab --help`, which must not pay for importing torch (about 2 s).
_LAZY = {"autocast": "device", "resolve_device": "device", "resolve_dtype": "device",
         "seed_everything": "seed", "seeded_generator": "seed", "Timer": "timer"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'resnetlab.utils' has no attribute {name!r}")
    from resnetlab.utils import device, seed, timer

    return getattr({"device": device, "seed": seed, "timer": timer}[_LAZY[name]], name)
