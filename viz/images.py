"""PNG writing and reading, atomic on disk."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .files import atomic_write

__all__ = ["decode_image", "png_bytes", "save_png"]


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
