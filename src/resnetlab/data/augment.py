"""Batched augmentation: whole-batch tensor ops that run on whatever device the batch is on.

Random parameters are drawn from a CPU ``torch.Generator`` (one per batch, seeded by the loader
from ``(seed, epoch, batch)``) and then moved, so a seed gives the same batches on CPU and GPU.
Geometric ops run on uint8 (a quarter of the bytes of float32); erasing runs after normalisation
so erased pixels hold 0, the per-channel mean.

Spec strings (``--augment``): ``default`` (the data set's recipe), ``none``, or a comma list of
``crop:PAD`` (pad PAD pixels with zeros, take a random crop of the original size, i.e. a random
translation; He et al. 2016, Sec. 4.2), ``flip`` (horizontal, p = 0.5), ``erase:P`` (random
erasing with probability P; Zhong et al. 2020) and ``cutout:SIZE`` (a SIZE x SIZE square;
DeVries & Taylor 2017).  Example: ``crop:4,flip,erase:0.25``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from resnetlab.utils.errors import ConfigError

__all__ = ["AugmentSpec", "parse_augment", "hflip", "random_crop", "random_flip",
           "random_crop_flip", "random_erase", "cutout", "Normalize", "ImageTransform",
           "flip_tta", "channel_stats"]


@dataclass(frozen=True)
class AugmentSpec:
    """A parsed ``--augment`` value; ``str(spec)`` gives it back in canonical form."""

    crop: int = 0
    flip: bool = False
    erase: float = 0.0
    cutout: int = 0

    def __bool__(self) -> bool:
        return bool(self.crop or self.flip or self.erase or self.cutout)

    def __str__(self) -> str:
        parts = [f"crop:{self.crop}"] if self.crop else []
        parts += ["flip"] if self.flip else []
        parts += [f"erase:{self.erase:g}"] if self.erase else []
        parts += [f"cutout:{self.cutout}"] if self.cutout else []
        return ",".join(parts) or "none"


_OPS = "crop:PAD, flip, erase:P, cutout:SIZE"


def _parse_op(token: str, spec: str) -> dict[str, float | int | bool]:
    name, _, arg = token.partition(":")
    try:
        if name in ("crop", "translate"):
            value = int(arg) if arg else 4
            return {"crop": value} if value >= 0 else {}
        if name == "flip" and not arg:
            return {"flip": True}
        if name == "erase":
            value = float(arg) if arg else 0.5
            return {"erase": value} if 0.0 <= value <= 1.0 else {}
        if name == "cutout":
            value = int(arg) if arg else 8
            return {"cutout": value} if value > 0 else {}
    except ValueError:
        pass
    raise ConfigError(f"--augment {spec!r}: cannot parse {token!r}; use 'default', 'none' or a "
                      f"comma list of {_OPS} (e.g. crop:4,flip,erase:0.25)")


def parse_augment(spec: str | AugmentSpec | None, default: str = "none") -> AugmentSpec:
    """Parse an ``--augment`` string; ``"default"`` means ``default`` (the data set's recipe)."""
    if isinstance(spec, AugmentSpec):
        return spec
    text = (spec or "none").strip().lower()
    if text == "default":
        text = default
    if text in ("", "none"):
        return AugmentSpec()
    fields: dict[str, float | int | bool] = {}
    for token in text.split(","):
        op = _parse_op(token.strip(), str(spec))
        if not op:
            raise ConfigError(f"--augment {spec!r}: {token.strip()!r} is out of range "
                              "(crop >= 0 px, 0 <= erase <= 1, cutout > 0 px)")
        fields.update(op)
    return AugmentSpec(**fields)  # type: ignore[arg-type]


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror left-right (the last dimension); an involution: ``hflip(hflip(x)) == x``."""
    return x.flip(-1)


def _crop_flip_index(n: int, h: int, w: int, pad: int, flip: bool,
                     gen: torch.Generator) -> torch.Tensor:
    """``(N, H + W)`` int64 on the CPU: per sample, the flat offset of each output row in the
    padded image (row index times padded width), then the source column of each output column.
    Draws come from ``gen``; the arithmetic on these small arrays is NumPy's (several times
    less per-call overhead than torch's for arrays of a few thousand elements)."""
    shift = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).numpy()
    flipped = (torch.rand(n, generator=gen) < 0.5).numpy() if flip else np.zeros(n, dtype=bool)
    rows = (shift[0, :, None] + np.arange(h)) * (w + 2 * pad)
    j = np.arange(w)
    # a flipped crop reads the crop window's columns right to left
    cols = shift[1, :, None] + np.where(flipped[:, None], w - 1 - j, j)
    return torch.from_numpy(np.concatenate([rows, cols], axis=1))


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``pad`` px (zero fill) and/or a horizontal flip with p = 0.5,
    fused into one gather: every output pixel reads one source pixel, no per-sample loop.

    The small index arithmetic runs on the CPU and crosses to the device in one copy, so on a
    GPU the op is one small copy and four kernels (pad: fill + copy, index add, gather).
    """
    n, c, h, w = x.shape
    index = _crop_flip_index(n, h, w, pad, flip, gen).to(x.device, non_blocking=True)
    flat = (index[:, :h, None] + index[:, None, h:]).view(n, 1, h * w).expand(n, c, h * w)
    src = F.pad(x, (pad, pad, pad, pad)) if pad else x
    return src.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Pad ``pad`` px with zeros on each side and take a random crop of the original size."""
    return random_crop_flip(x, pad, False, gen)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each sample horizontally with probability 0.5."""
    return random_crop_flip(x, 0, True, gen)


def _box_mask(shape: Sequence[int], top: np.ndarray, left: np.ndarray, height: np.ndarray,
              width: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(N, 1, H, W)`` bool, True inside each sample's box (boxes may extend past the border).

    Row and column membership are computed on the CPU.  A CPU batch gets their outer product
    from NumPy (torch's broadcast ``&`` on bool is several times slower there); for a GPU the
    N x (H + W) memberships cross in one small copy and the device forms the product.
    """
    n, _, h, w = shape
    r, c = np.arange(h), np.arange(w)
    in_rows = (r >= top[:, None]) & (r < (top + height)[:, None])
    in_cols = (c >= left[:, None]) & (c < (left + width)[:, None])
    if device.type == "cpu":
        return torch.from_numpy(in_rows[:, None, :, None] & in_cols[:, None, None, :])
    both = torch.from_numpy(np.concatenate([in_rows, in_cols], axis=1)).to(device)
    return (both[:, :h, None] & both[:, None, h:]).view(n, 1, h, w)


def _fill(x: torch.Tensor, mask: torch.Tensor, inplace: bool) -> torch.Tensor:
    # in place keeps the input's memory format (channels_last); out of place would not
    return x.masked_fill_(mask, 0) if inplace else x.masked_fill(mask, 0)


def random_erase(x: torch.Tensor, p: float, gen: torch.Generator,
                 area: tuple[float, float] = (0.02, 0.4), ratio: float = 0.3, *,
                 inplace: bool = False) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020, Alg. 1: area fraction in [0.02, 0.4], aspect ratio
    log-uniform in [0.3, 1/0.3]) with probability ``p`` per sample; the box is set to 0, which
    is the channel mean after normalisation."""
    n, _, h, w = x.shape
    u = torch.rand(5, n, generator=gen, dtype=torch.float64).numpy()
    size = (area[0] + (area[1] - area[0]) * u[1]) * (h * w)
    aspect = np.exp(math.log(ratio) * (1 - 2 * u[2]))
    height = np.clip(np.rint(np.sqrt(size * aspect)), 1, h)
    width = np.clip(np.rint(np.sqrt(size / aspect)), 1, w)
    top = np.floor(u[3] * (h - height + 1))
    left = np.floor(u[4] * (w - width + 1))
    height = np.where(u[0] < p, height, 0)
    box = [v.astype(np.int64) for v in (top, left, height, width)]
    return _fill(x, _box_mask(x.shape, *box, device=x.device), inplace)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator, *,
           inplace: bool = False) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): a ``size`` x ``size`` square centred on a uniformly
    random pixel (clipped at the border) is set to 0 in every sample."""
    n, _, h, w = x.shape
    top = torch.randint(0, h, (n,), generator=gen).numpy() - size // 2
    left = torch.randint(0, w, (n,), generator=gen).numpy() - size // 2
    side = np.full_like(top, size)
    return _fill(x, _box_mask(x.shape, top, left, side, side, device=x.device), inplace)


class Normalize:
    """uint8 -> float32 ``(x / 255 - mean) / std`` per channel, as ``(x - 255 mean) / (255 std)``:
    one subtraction and one multiplication, each exactly rounded, so CPU and GPU agree bit for
    bit.  The memory format of the input (channels_last) is kept."""

    def __init__(self, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu"):
        shape = (1, len(mean), 1, 1)
        self.shift = (torch.tensor(mean, dtype=torch.float64) * 255).float().view(shape)
        self.scale = (1 / (torch.tensor(std, dtype=torch.float64) * 255)).float().view(shape)
        self.shift, self.scale = self.shift.to(device), self.scale.to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # uint8 - float32 promotes to float32 inside the kernel: no separate conversion pass
        return torch.sub(x, self.shift).mul_(self.scale)


class ImageTransform:
    """The per-batch image pipeline: [crop/flip] -> channels_last -> normalise -> [erase, cutout].

    Called with a generator for training batches, without one (no augmentation) for evaluation.
    """

    def __init__(self, spec: AugmentSpec, mean: Sequence[float], std: Sequence[float], *,
                 device: torch.device | str = "cpu", channels_last: bool = True):
        self.spec, self.channels_last = spec, channels_last
        self.normalize = Normalize(mean, std, device)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        spec = self.spec if gen is not None else AugmentSpec()
        if spec.crop or spec.flip:
            x = random_crop_flip(x, spec.crop, spec.flip, gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.normalize(x)
        if spec.erase:
            x = random_erase(x, spec.erase, gen, inplace=True)
        if spec.cutout:
            x = cutout(x, spec.cutout, gen, inplace=True)
        return x


def flip_tta(x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Views for test-time augmentation: the batch, then (for images) its horizontal mirror.

    Average the model's softmax outputs over the views.
    """
    yield x
    if x.dim() == 4:
        yield hflip(x)


def channel_stats(x: torch.Tensor | np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images ``(N, C, H, W)`` on the [0, 1] scale.

    Computed exactly from a 256-bin histogram per channel (no float copy of the data).  A
    constant channel gets std 1 so normalisation never divides by zero.
    """
    x = torch.as_tensor(x)
    levels = torch.arange(256, dtype=torch.float64, device=x.device)
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        mean = (hist * levels).sum() / hist.sum()
        var = (hist * (levels - mean) ** 2).sum() / hist.sum()
        means.append(float(mean) / 255)
        stds.append(float(var.sqrt()) / 255 or 1.0)
    return means, stds
