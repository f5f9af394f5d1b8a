"""Classification metrics accumulated on the device (no host sync per batch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch

from resnetlab.engine import distributed

__all__ = ["EvalResult", "ClassificationMeter", "RegressionMeter", "StepRecorder", "StepStat",
           "smoothed_nll"]


@dataclass
class EvalResult:
    """Loss and accuracies over a whole split.

    ``top1``/``top5`` are fractions in [0, 1] (top-5 uses ``min(5, num_classes)``);
    ``per_class[c]`` is the recall of class ``c`` (NaN when the split has no sample of it);
    ``confusion[true][pred]`` counts samples.  A regression result has ``top1``/``top5`` None,
    no per-class rows, and ``rmse`` (target units) and ``r2`` instead.
    """

    loss: float
    top1: float | None
    top5: float | None
    per_class: list[float]
    confusion: list[list[int]]
    num_samples: int
    rmse: float | None = None
    r2: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def smoothed_nll(log_probs: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy from log-probabilities with label smoothing (Szegedy et al. 2016).

    Equal to ``F.cross_entropy(logits, y, label_smoothing=s, reduction="sum")`` when
    ``log_probs = log_softmax(logits)``; written on log-probabilities so that TTA, which averages
    probabilities, uses the same loss.
    """
    nll = -log_probs.gather(1, target[:, None]).squeeze(1)
    if smoothing:
        nll = (1.0 - smoothing) * nll - smoothing * log_probs.mean(dim=1)
    return nll.sum()


class ClassificationMeter:
    """Running sums of loss, top-1/top-5 hits and the confusion matrix, kept on ``device``."""

    def __init__(self, num_classes: int, device: torch.device, confusion: bool = True):
        self.num_classes = num_classes
        self.topk = min(5, num_classes)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top1, top-k hits
        self.count = 0  # samples, counted on the host: the batch size is known without a sync
        self.confusion = (torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
                          if confusion else None)

    @torch.no_grad()
    def update(self, scores: torch.Tensor, target: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """Add one batch: ``scores`` (logits or probabilities, N x C), labels, summed loss."""
        top = scores.topk(self.topk, dim=1).indices
        hits = top == target[:, None]
        self.sums += torch.stack([loss_sum.detach().double(), hits[:, 0].sum().double(),
                                  hits.any(dim=1).sum().double()])
        self.count += len(target)
        if self.confusion is not None:
            pairs = target * self.num_classes + top[:, 0]
            self.confusion += torch.bincount(pairs, minlength=self.num_classes ** 2)

    def reset(self) -> None:
        self.sums.zero_()
        self.count = 0
        if self.confusion is not None:
            self.confusion.zero_()

    def all_reduce(self) -> None:
        """Sum over processes (a no-op outside torchrun)."""
        distributed.all_reduce_sum(self.sums)
        count = torch.tensor([self.count], dtype=torch.int64, device=self.sums.device)
        self.count = int(distributed.all_reduce_sum(count).item())
        if self.confusion is not None:
            distributed.all_reduce_sum(self.confusion)

    def summary(self) -> dict[str, float]:
        """Loss (mean per sample), top-1 and top-5 as floats; one host sync."""
        loss, top1, topk = self.sums.tolist()
        n = max(self.count, 1)
        return {"loss": loss / n, "top1": top1 / n, "top5": topk / n, "num_samples": self.count}

    def result(self) -> EvalResult:
        """The full :class:`EvalResult` (needs ``confusion=True``)."""
        s = self.summary()
        conf = self.confusion.view(self.num_classes, self.num_classes).cpu()
        support = conf.sum(dim=1).tolist()
        per_class = [conf[c, c].item() / support[c] if support[c] else math.nan
                     for c in range(self.num_classes)]
        return EvalResult(loss=s["loss"], top1=s["top1"], top5=s["top5"], per_class=per_class,
                          confusion=conf.tolist(), num_samples=s["num_samples"])


class RegressionMeter:
    """Running sums for a standardised regression target: squared error, sum and sum of squares
    of the target (for R^2 = 1 - SSE / SST), kept on ``device``.

    ``target_std`` maps the RMSE back to target units (the loss stays in standardised units).
    """

    def __init__(self, target_std: float, device: torch.device):
        self.target_std = target_std
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # SSE, sum y, sum y^2
        self.count = 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """Add one batch: predictions and targets (N,), summed squared error."""
        y = target.double()
        self.sums += torch.stack([loss_sum.detach().double(), y.sum(), (y * y).sum()])
        self.count += len(target)

    def all_reduce(self) -> None:
        """Sum over processes (a no-op outside torchrun)."""
        distributed.all_reduce_sum(self.sums)
        count = torch.tensor([self.count], dtype=torch.int64, device=self.sums.device)
        self.count = int(distributed.all_reduce_sum(count).item())

    def result(self) -> EvalResult:
        sse, total, squares = self.sums.tolist()
        n = max(self.count, 1)
        sst = squares - total * total / n  # around the split's own mean: R^2 0 = predicting it
        return EvalResult(loss=sse / n, top1=None, top5=None, per_class=[], confusion=[],
                          num_samples=self.count, rmse=math.sqrt(sse / n) * self.target_std,
                          r2=1.0 - sse / sst if sst > 0 else math.nan)


class StepStat(NamedTuple):
    """One training step as read back from the device: its number, images, loss, top-1 hits."""

    step: int
    size: int
    loss: float
    hits: float


class StepRecorder:
    """Per-step training loss and top-1 hits, written into device buffers; read in one sync.

    Recording is three small kernels per step and no host sync; :meth:`drain` reads the steps
    since the last drain at once (summed over ranks under torchrun).  ``capacity`` is the longest
    expected run of steps between drains (the buffers grow if it is exceeded).
    """

    def __init__(self, capacity: int, device: torch.device):
        self.loss = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.hits = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.pending: list[tuple[int, int]] = []  # (step number, batch size), known on the host

    @torch.no_grad()
    def record(self, step: int, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        i = len(self.pending)
        if i == len(self.loss):  # more steps than planned between drains: grow, never fail
            self.loss = torch.cat([self.loss, torch.zeros_like(self.loss)])
            self.hits = torch.cat([self.hits, torch.zeros_like(self.hits)])
        self.loss[i] = loss.detach()
        # a regression target (float) has no hits; its loss is the whole story
        self.hits[i] = 0 if target.is_floating_point() else (logits.argmax(dim=1) == target).sum()
        self.pending.append((step, len(target)))

    def drain(self) -> list[StepStat]:
        n = len(self.pending)
        if n == 0:
            return []
        both = distributed.all_reduce_sum(torch.stack([self.loss[:n].double(), self.hits[:n].double()]))
        world = distributed.dist_info().world_size
        losses, hits = both.tolist()
        out = [StepStat(step, size * world, loss / world, h)
               for (step, size), loss, h in zip(self.pending, losses, hits, strict=True)]
        self.pending = []
        return out
