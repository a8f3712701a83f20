"""PNG writing and reading, atomic on disk."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray, optimize: bool = True) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_png(path: Path, image: np.ndarray) -> None:
    atomic_write(Path(path), png_bytes(image))
