"""What the first layer computes, read off its weights: conv1_1 is linear in the pixels, so each channel is one
3x3 RGB kernel, and a picture of that kernel says more than any image maximizing its mean."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..engine.layers import get_layer
from ..engine.model import VGGFeatures


def rgb_kernel(model: VGGFeatures, channel: int) -> np.ndarray:
    """conv1_1's ``channel`` as weights on the RGB pixels in [0, 1]: (3, 3, 3) as (row, column, colour), the
    input normalization folded in (the weights may expect another channel order, scale and spread)."""
    lay = get_layer("conv1_1")
    if not 0 <= channel < lay.channels:
        raise ValueError(f"conv1_1 has channels 0-{lay.channels - 1}, not {channel}")
    w = model.features[lay.index].weight.detach().float().cpu()[channel]  # (3 input channels, 3, 3)
    norm = model.normalize
    per_input = w * (norm.scale / norm.std.detach().float().cpu().view(3, 1, 1))
    rgb = torch.zeros_like(per_input)
    for j, c in enumerate(norm.order):  # normalized input j reads pixel colour c
        rgb[c] += per_input[j]
    return rgb.permute(1, 2, 0).numpy()


def kernel_picture(kernel: np.ndarray, side: int = 96) -> np.ndarray:
    """A (3, 3, 3) RGB kernel as an image: mid-grey is 0, each colour brighter where its weight is positive and
    darker where negative (scaled by the largest weight), each tap a sharp square of ``side / 3`` px."""
    k = np.asarray(kernel, dtype=np.float64)
    top = np.abs(k).max() or 1.0
    img = np.round(255 * (0.5 + 0.5 * k / top)).clip(0, 255).astype(np.uint8)
    cell = max(1, side // k.shape[0])
    return np.asarray(Image.fromarray(img).resize((cell * k.shape[1], cell * k.shape[0]), Image.Resampling.NEAREST))


def preferred_colour_and_orientation(kernel: np.ndarray) -> str:
    """A few words on what the kernel responds to: its mean colour weight and, for an edge, its orientation."""
    k = np.asarray(kernel, dtype=np.float64)
    lum = k.sum(axis=2)
    gy = lum[2].sum() - lum[0].sum()  # bottom row minus top row
    gx = lum[:, 2].sum() - lum[:, 0].sum()
    colour = k.sum(axis=(0, 1))
    names = ("red", "green", "blue")
    strongest = int(np.argmax(np.abs(colour)))
    sign = "more" if colour[strongest] > 0 else "less"
    edge = np.hypot(gx, gy)
    words = f"responds to {sign} {names[strongest]}"
    if edge > 0.5 * np.abs(lum).sum() / 3:
        angle = (np.degrees(np.arctan2(gy, gx)) + 180) % 180
        kind = "vertical" if angle < 22.5 or angle > 157.5 else "horizontal" if 67.5 < angle < 112.5 else "diagonal"
        words += f" and to a {kind} brightness edge"
    return words


def diverging_picture(kernel: np.ndarray, side: int = 48, scale: float | None = None) -> np.ndarray:
    """A 2-D kernel as a small heat map: white is 0, red excites, blue inhibits, full colour at ``scale`` (default:
    the kernel's largest magnitude; pass one scale to make several kernels comparable). Each tap a sharp square."""
    k = np.asarray(kernel, dtype=np.float64)
    top = scale if scale and scale > 0 else (np.abs(k).max() or 1.0)
    v = np.clip(k / top, -1, 1)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)  # red: (1, 1-p, 1-p); blue: (1-n, 1-n, 1)
    img = np.round(255 * rgb).clip(0, 255).astype(np.uint8)
    cell = max(1, side // max(k.shape))
    return np.asarray(Image.fromarray(img).resize((cell * k.shape[1], cell * k.shape[0]), Image.Resampling.NEAREST))
