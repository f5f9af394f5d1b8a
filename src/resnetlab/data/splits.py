"""Deterministic, stratified splits (validation hold-out and ``--train-size`` subsets)."""

from __future__ import annotations

import numpy as np
import torch

from resnetlab.utils.errors import ConfigError
from resnetlab.utils.seed import seeded_generator

__all__ = ["stratified_take", "default_val_size", "split_train_val"]

NAMED_VAL_SIZE = 5000  # 55k/5k Fashion-MNIST; 45k/5k CIFAR as in He et al. 2016, Sec. 4.2


def default_val_size(num_samples: int) -> int:
    """10% of a user's folder/table, at most 5000 and at least 1."""
    return min(NAMED_VAL_SIZE, max(1, round(0.1 * num_samples)))


def stratified_take(labels: np.ndarray, n: int, *keys: int | str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``arange(len(labels))`` into ``(taken, rest)`` with ``len(taken) == n``.

    Each class contributes in proportion to its frequency (largest-remainder rounding), the
    members chosen at random from a generator seeded by ``keys``.  Both outputs are sorted.
    """
    total = len(labels)
    if not 0 <= n <= total:
        raise ValueError(f"cannot take {n} of {total} samples")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = counts * (n / total)
    share = np.floor(quota).astype(np.int64)
    # hand the leftover samples to the classes with the largest fractional quota
    share[np.argsort(-(quota - share), kind="stable")[: n - int(share.sum())]] += 1
    noise = torch.rand(total, generator=seeded_generator(*keys), dtype=torch.float64).numpy()
    order = np.lexsort((noise, inverse))  # grouped by class, random within a class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(total) - np.repeat(starts, counts)
    chosen = rank < np.repeat(share, counts)
    return np.sort(order[chosen]), np.sort(order[~chosen])


def split_train_val(labels: np.ndarray, *, val_size: int, train_size: int | None,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: a stratified validation hold-out, then an optional stratified
    ``train_size`` subset of the rest.  Errors name the flag when a size is impossible."""
    total = len(labels)
    if not 0 <= val_size < total:
        raise ConfigError(f"--val-size {val_size}: must be between 0 and {total - 1} "
                          f"(the training split has {total} samples)")
    val, train = stratified_take(labels, val_size, seed, "val")
    if train_size is not None:
        if not 1 <= train_size <= len(train):
            raise ConfigError(f"--train-size {train_size}: must be between 1 and {len(train)} "
                              f"({total} samples minus {val_size} held out for validation)")
        taken, _ = stratified_take(labels[train], train_size, seed, "train-size")
        train = train[taken]
    return train, val
