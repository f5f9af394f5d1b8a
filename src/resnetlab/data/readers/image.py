"""Image files: PNG, JPEG, BMP and WebP decoded with Pillow.

Any Pillow mode (1, L, LA, P, RGB, RGBA, CMYK, I;16, ...) is decoded to the model's channel
count (1 or 3), resized to cover the target size and centre-cropped, and returned as uint8
``(C, H, W)``.  Unreadable files, including decompression bombs beyond Pillow's pixel limit
(which we keep), raise ``DataError`` naming the path.
"""

from __future__ import annotations

import io
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from resnetlab.utils.errors import ConfigError, DataError

__all__ = ["IMAGE_EXTENSIONS", "ALPHA_BACKGROUND", "ImageTooLargeError", "decode_image", "probe_images",
           "convert_mode", "fit_size"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Transparent pixels are composited onto black: the background of MNIST-style data, and the
# value a premultiplied-alpha image already stores for "nothing here".
ALPHA_BACKGROUND = 0


def _is_grey(img: Image.Image) -> bool:
    if img.mode == "P":
        palette = np.asarray(img.getpalette() or [0, 0, 0], dtype=np.int64).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return img.mode in _GREY_MODES


def _to_8bit(img: Image.Image) -> Image.Image:
    """Integer and float modes to L: 16-bit PNGs (I;16, I) span 0..65535, so divide by 257."""
    arr = np.asarray(img, dtype=np.float64)
    scale = 1.0 if img.mode == "F" else 1.0 / 257.0
    return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")


def convert_mode(img: Image.Image, in_chans: int) -> Image.Image:
    """``img`` as L (``in_chans=1``, ITU-R 601 luma) or RGB (3); alpha composited onto black."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img)
    has_alpha = img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (ALPHA_BACKGROUND,) * 3 + (255,))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if in_chans == 1 else "RGB")


def fit_size(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to cover ``size`` (H, W), keeping the aspect ratio, then centre-crop."""
    height, width = size
    if img.size == (width, height):
        return img
    scale = max(height / img.height, width / img.width)
    new_w, new_h = max(width, round(img.width * scale)), max(height, round(img.height * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)  # antialiased when shrinking
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return img.crop((left, top, left + width, top + height))


class ImageTooLargeError(DataError):
    """An image whose pixel count is over the caller's cap (or Pillow's decompression-bomb
    limit): refused before its pixels are decoded."""


def _opened(source: str | Path | bytes) -> str | Path | io.BytesIO:
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source


def decode_image(source: str | Path | bytes, in_chans: int, size: tuple[int, int], *,
                 max_pixels: int | None = None, name: str | None = None) -> np.ndarray:
    """Decode one image (a file, or its bytes) to uint8 ``(in_chans, H, W)``.

    Unreadable input raises ``DataError`` naming ``name`` (default: the path); an image of more
    than ``max_pixels`` pixels (width x height, read from its header before any decoding)
    raises :class:`ImageTooLargeError`.
    """
    if in_chans not in (1, 3):
        raise ConfigError(f"--in-chans {in_chans}: image folders convert to 1 (grey) or 3 (RGB)")
    where, pixels, arr = (source if name is None else name), 0, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(_opened(source)) as img:
                pixels = img.width * img.height
                if max_pixels is None or pixels <= max_pixels:
                    # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: much faster for photos
                    img.draft(None, (max(size),) * 2)
                    img = ImageOps.exif_transpose(img)  # phone photos store rotation in EXIF
                    img = fit_size(convert_mode(img, in_chans), size)
                    arr = np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(f"{where}: image too large ({err})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        # Pillow names the BytesIO object of in-memory data; the caller's name says which
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "data", str(err))
        raise DataError(f"{where}: cannot read image ({reason})") from None
    if arr is None:
        raise ImageTooLargeError(f"{where}: image too large ({pixels} pixels; the limit is "
                                 f"{max_pixels})")
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def probe_images(files: list[Path], limit: int = 256) -> tuple[int, tuple[int, int]]:
    """Default ``(in_chans, (H, W))`` from up to ``limit`` evenly spaced files' headers.

    Channels: 3 if any probed image is colour, else 1.  Size: the most common one.
    """
    step = max(1, len(files) // limit)
    colour, sizes = False, Counter()
    for path in files[::step][:limit]:
        try:
            with Image.open(path) as img:
                colour |= not _is_grey(img)
                width, height = img.size
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
                    width, height = height, width
                sizes[(height, width)] += 1
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # reported with its path (or skipped and counted) when decoded
    if not sizes:
        raise DataError(f"{files[0].parent}: none of the {len(files)} image files could be read")
    return (3 if colour else 1), sizes.most_common(1)[0][0]
