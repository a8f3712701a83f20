"""Decoding a visitor's or a folder's image: orientation kept through a shrink, the shrink itself exact."""

import io

import numpy as np
import pytest
from PIL import Image

from viz.base.corpus import decode, shrink


def encoded(image: Image.Image, fmt: str, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format=fmt, exif=exif)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_survives_a_shrink(fmt):
    """A photo taken sideways (orientation 6: turn 90 degrees to show it) comes out upright, also when it is
    larger than the side it may be decoded at, where the shrunk image no longer carries the EXIF block."""
    wide = Image.fromarray(np.tile(np.linspace(0, 255, 600, dtype=np.uint8)[None, :, None], (300, 1, 3)))
    for max_side, side in ((None, 600), (200, 200)):
        upright = decode(encoded(wide, fmt, 6), max_side=max_side)
        assert upright.shape[:2] == (side, side // 2), (fmt, max_side)  # tall now: width 300 -> rows 600
        plain = decode(encoded(wide, fmt), max_side=max_side)
        assert plain.shape[:2] == (side // 2, side), (fmt, max_side)
        # orientation 6 turns the image clockwise: its dark left end is now at the top
        assert upright[: side // 8].mean() < upright[-side // 8:].mean() - 100, (fmt, max_side)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "F", "I;16"])
def test_a_banded_shrink_is_one_reduce(mode):
    """The shrink works band by band to bound its memory; the result is exactly a whole-image box reduce."""
    rng = np.random.default_rng(0)
    shape = {"RGB": (1001, 1503, 3), "RGBA": (1001, 1503, 4)}.get(mode, (1001, 1503))
    if mode == "F":
        image = Image.fromarray(rng.random(shape, dtype=np.float32))
    elif mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, shape, dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)
    small = shrink(image, 200)
    k = 8  # ceil(1503 / 200)
    whole = np.asarray(image)[::k, ::k].astype(np.int32) if mode == "I;16" else np.asarray(image.reduce(k))
    assert small.size == (188, 126) and np.array_equal(np.asarray(small), whole)
