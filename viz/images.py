"""PNG writing and reading, atomic on disk."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .files import atomic_write

__all__ = ["atomic_write", "png_bytes", "save_png"]


def png_bytes(image: np.ndarray, optimize: bool = True) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def save_png(path: Path, image: np.ndarray) -> None:
    atomic_write(Path(path), png_bytes(image))
