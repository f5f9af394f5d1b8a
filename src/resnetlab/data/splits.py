"""Deterministic, stratified splits (validation hold-out and ``--train-size`` subsets)."""

from __future__ import annotations

import numpy as np
import torch

from resnetlab.utils.errors import ConfigError
from resnetlab.utils.seed import seeded_generator

__all__ = ["stratified_take", "default_val_size", "resolve_val_size", "split_train_val"]

NAMED_VAL_SIZE = 5000  # 55k/5k Fashion-MNIST; 45k/5k CIFAR as in He et al. 2016, Sec. 4.2
DEFAULT_VAL_FRACTION = 0.1


def default_val_size(num_samples: int, num_classes: int = 1) -> int:
    """10% of a user's folder/table, at most 5000, at least one per class where the rest still
    keeps one per class for training, and never all of it."""
    n = min(NAMED_VAL_SIZE, round(DEFAULT_VAL_FRACTION * num_samples))
    if num_samples >= 2 * num_classes:
        n = max(n, num_classes)
    return max(0, min(max(n, 1), num_samples - 1))


def resolve_val_size(val_size: int | float | None, labels: np.ndarray, *,
                     named: bool = False) -> tuple[int, str]:
    """``(count, how it was chosen)`` for ``--val-size``: None is the data's own default (the
    named data set's 5000, else :func:`default_val_size`), a float in (0, 1) a fraction of the
    training data, an int a count."""
    total = len(labels)
    if val_size is None:
        if named:
            return NAMED_VAL_SIZE, f"data set split {NAMED_VAL_SIZE}"
        n = default_val_size(total, len(np.unique(labels)))
        return n, f"default {DEFAULT_VAL_FRACTION:g} of {total} (at most {NAMED_VAL_SIZE})"
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ConfigError(f"--val-size {val_size!r}: give a count (500) or a fraction (0.1)")
    if isinstance(val_size, float) and not val_size.is_integer():
        if not 0 < val_size < 1:
            raise ConfigError(f"--val-size {val_size}: a fraction must be between 0 and 1")
        return max(1, round(val_size * total)), f"fraction {val_size:g} of {total}"
    return int(val_size), f"count {int(val_size)}"


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
