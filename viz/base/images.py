"""PNG writing and reading, atomic on disk."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .files import atomic_write

__all__ = ["decode_image", "png_bytes", "save_png", "strip", "thumbnail", "unstrip"]


def png_bytes(image: np.ndarray, optimize: bool = True) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def save_png(path: Path, image: np.ndarray) -> None:
    atomic_write(Path(path), png_bytes(image))


def zoom_png(data: bytes, target: int) -> tuple[bytes, int, int]:
    """Enlarge a PNG by the largest whole factor that keeps it within ``target`` px, with nearest-neighbour
    sampling (every source pixel becomes a sharp square); returns (PNG, factor, source side)."""
    with Image.open(io.BytesIO(data)) as im:
        side = im.width
        factor = max(1, target // max(im.width, im.height))
        if factor == 1:
            return data, 1, side
        big = im.convert("RGB").resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
    return png_bytes(np.asarray(big), optimize=False), factor, side


def decode_image(data: bytes) -> np.ndarray:
    """An image file's bytes (a gallery's own PNG) as RGB uint8 (H, W, 3)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` scaled down (Lanczos) to fit a ``side`` x ``side`` square, its aspect kept."""
    im = Image.fromarray(image)
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(im)


def strip(images: np.ndarray, gap: int = 4) -> np.ndarray:
    """(B, H, W, 3) -> one (H, B * W + gaps, 3) image: a view's images side by side (diversity, mixes)."""
    if len(images) == 1:
        return images[0]
    h, w = images.shape[1:3]
    out = np.full((h, len(images) * (w + gap) - gap, 3), 255, np.uint8)
    for i, im in enumerate(images):
        out[:, i * (w + gap): i * (w + gap) + w] = im
    return out


def unstrip(image: np.ndarray, count: int, gap: int = 4) -> list[np.ndarray]:
    """The ``count`` images :func:`strip` put side by side, apart again."""
    if count <= 1:
        return [image]
    w = (image.shape[1] + gap) // count - gap
    return [image[:, i * (w + gap): i * (w + gap) + w] for i in range(count)]
