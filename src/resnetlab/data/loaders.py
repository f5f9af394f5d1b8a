"""Batch loaders: a seeded permutation sliced into batches, then one transform per batch.

A *source* turns lists of sample indices into ``(x, y)`` batches on the training device:
:class:`TensorSource` slices one in-memory tensor (uint8 images or float32 table rows);
:class:`StreamSource` reads through DataLoader workers (PIL decoding or a memory-mapped cache)
for data that does not fit in memory.  :class:`BatchLoader` owns the order and the randomness,
so every source gives the same batches for the same seed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from resnetlab.utils.errors import ConfigError, DataError
from resnetlab.utils.seed import seeded_generator

__all__ = ["TensorSource", "StreamSource", "ArrayBatches", "BatchLoader", "RowsSource", "bounded"]

log = logging.getLogger(__name__)
Batch = tuple[torch.Tensor, torch.Tensor]


class TensorSource:
    """Samples held as one tensor ``x`` (N, ...) with labels ``y`` (N,), on one device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} samples but {len(y)} labels")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, chunks: list[torch.Tensor]) -> Iterator[Batch]:
        """``(x[idx], y[idx])`` for each index tensor in ``chunks``, on the data's device."""
        if not chunks:
            return
        # one host-to-device copy of the whole order instead of one per batch
        order = torch.cat(chunks).to(self.x.device, non_blocking=True)
        for idx in order.split([len(c) for c in chunks]):
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)


class ArrayBatches(torch.utils.data.Dataset):
    """Batch items from a uint8 ``.npy`` file opened memory-mapped (the decoded-image cache).

    ``rows`` maps this split's sample index to the file's row.  Rows are read in ascending
    order (sequential disk access) and put back in the requested order.
    """

    def __init__(self, path: str, rows: np.ndarray, labels: np.ndarray):
        self.path, self.rows, self.labels = path, rows, labels
        self._array: np.ndarray | None = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, list]:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        idx = np.asarray(indices)
        order = np.argsort(self.rows[idx], kind="stable")
        x = np.empty((len(idx), *self._array.shape[1:]), dtype=np.uint8)
        x[order] = self._array[self.rows[idx[order]]]
        return torch.from_numpy(x), torch.from_numpy(self.labels[idx]), []


class StreamSource:
    """Batches read by DataLoader workers from a batch-item data set (``ds[list] -> x, y, bad``).

    ``on_bad_image="error"`` turns the first unreadable file into a one-line ``DataError``;
    ``"skip"`` drops it from its batch and records it in ``skipped``.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, *, device: torch.device,
                 num_workers: int = 0, on_bad_image: str = "error"):
        self.dataset, self.device = dataset, torch.device(device)
        self.num_workers, self.on_bad_image = num_workers, on_bad_image
        self.skipped: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, chunks: list[torch.Tensor]) -> Iterator[Batch]:
        """Read each chunk as one batch in the workers; yield it on the device (maybe short)."""
        loader = torch.utils.data.DataLoader(
            self.dataset, sampler=[c.tolist() for c in chunks], batch_size=None,
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.num_workers else None)
        for x, y, bad in loader:
            if bad and self.on_bad_image == "error":
                raise DataError(f"{bad[0][1]}; fix or delete the file, or pass --on-bad-image skip")
            for i, message in bad:
                if i not in self.skipped:
                    log.warning("skipped: %s", message)
                    self.skipped[i] = message
            yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))


class BatchLoader:
    """Batches of one split: ``len(loader)`` per epoch, ``loader.epoch(e, start)`` yields them.

    Training loaders (``train=True``) shuffle with a permutation seeded by ``(seed, epoch)``,
    drop the last partial batch, and give the transform a CPU generator seeded by
    ``(seed, epoch, batch)``: ``epoch(e, start=k)`` yields exactly batches ``k..`` of
    ``epoch(e)`` without computing the first ``k``, on any device.  Evaluation loaders keep the
    file order, keep the last partial batch and do not augment.
    """

    def __init__(self, source: TensorSource | StreamSource, *, batch_size: int, train: bool,
                 seed: int = 0, transform: Callable[..., torch.Tensor] | None = None,
                 name: str = "data"):
        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size} for the {name} split must be >= 1")
        self.source, self.train, self.seed, self.name = source, train, seed, name
        self.transform = transform or (lambda x, gen=None: x)
        n = len(source)
        # a --train-size smaller than the batch still gives one full batch per epoch
        self.batch_size = min(batch_size, n) if train and n else batch_size

    @property
    def num_samples(self) -> int:
        return len(self.source)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (CPU int64)."""
        if self.train:
            return torch.randperm(self.num_samples, generator=seeded_generator(self.seed, "order", epoch))
        return torch.arange(self.num_samples)

    # ``epoch(every=)`` reads only every k-th batch: the engine's distributed sampler for this
    # loader (each rank reads and decodes its own batches of the one seeded permutation).
    strided = True

    def epoch(self, epoch: int = 0, start: int = 0, every: int = 1) -> Iterator[Batch]:
        """Yield ``(x, y)`` for batches ``start, start + every, ...`` of ``epoch``."""
        if not 0 <= start <= len(self):
            raise ConfigError(f"start batch {start}: an epoch of the {self.name} split has "
                              f"{len(self)} batches")
        order, b = self.order(epoch), self.batch_size
        picked = range(start, len(self), every)
        chunks = [order[i * b:(i + 1) * b] for i in picked]
        for i, (x, y) in zip(picked, self.source.batches(chunks), strict=False):
            if len(y) == 0:
                continue  # every file of the batch was skipped as unreadable
            gen = seeded_generator(self.seed, "augment", epoch, i) if self.train else None
            yield self.transform(x, gen), y

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)

    def __repr__(self) -> str:
        return (f"BatchLoader({self.name}: {self.num_samples} samples, batch {self.batch_size}, "
                f"{len(self)} batches, {'shuffled' if self.train else 'fixed order'})")


class RowsSource:
    """Rows ``rows`` of another source, in that order (a bounded final test: ``--test-size``)."""

    def __init__(self, source: TensorSource | StreamSource, rows: torch.Tensor):
        self.source, self.rows = source, rows

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, chunks: list[torch.Tensor]) -> Iterator[Batch]:
        return self.source.batches([self.rows[c] for c in chunks])


def _class_labels(source: object) -> np.ndarray | None:
    """The integer labels of a source without reading its images, or None (regression, or a
    source that cannot say)."""
    y = getattr(source, "y", None)
    if y is None:  # streamed: the folder index or the cache's label array
        dataset = getattr(source, "dataset", None)
        y = getattr(getattr(dataset, "index", dataset), "labels", None)
    if y is None:
        return None
    y = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return y if np.issubdtype(y.dtype, np.integer) else None


def bounded(loader: BatchLoader, n: int | None, split_seed: int) -> BatchLoader:
    """``loader`` limited to ``n`` samples: a stratified subset (each class in proportion, fixed
    by ``split_seed``) kept in file order; evenly spaced rows when there are no class labels.
    ``loader`` itself when ``n`` is None or not smaller."""
    if n is None or n >= loader.num_samples:
        return loader
    from resnetlab.data.splits import stratified_take

    labels = _class_labels(loader.source)
    if labels is not None:
        rows = stratified_take(labels, n, split_seed, "test-size")[0]
    else:
        rows = np.unique(np.linspace(0, loader.num_samples - 1, n).round().astype(np.int64))
    return BatchLoader(RowsSource(loader.source, torch.from_numpy(rows)),
                       batch_size=loader.batch_size, train=False, seed=loader.seed,
                       transform=loader.transform, name=f"{loader.name} (--test-size {n})")
