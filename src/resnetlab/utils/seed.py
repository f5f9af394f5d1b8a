"""Seeding.  Randomness that must survive a resume is derived from keys, not from global state."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed that depends only on ``keys`` (e.g. ``(seed, epoch, batch)``)."""
    digest = hashlib.blake2b("/".join(map(str, keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seeded_generator(*keys: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``keys``.

    Draws are made on the CPU and moved, so the same keys give the same numbers on CPU and GPU.
    """
    return torch.Generator().manual_seed(derive_seed(*keys))
