"""Render methods: each a recipe naming its parameterization, objective, transforms and defaults.

A method says *how* to render; a view (:mod:`viz.engine.views`) says *what*: both are recorded in the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .objectives import Objective, channel, rectified, seed_mse
from .param import Parameterization, fourier_image, maco_image, pixel_image
from .transforms import Compose, blurred_transforms, standard_transforms


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    make_param: Callable[[list[torch.Generator], int], Parameterization]
    make_objective: Callable[[str, list[int]], Objective]  # (layer, each image's channel) -> the channel view
    make_transforms: Callable[[], Compose | None]
    activation: str  # "pre" or "post": which side of the target conv's ReLU the objective reads
    lr: float
    octaves: tuple[tuple[float, float], ...] = ()  # coarse-to-fine: (start as a fraction of the steps, scale)
    version: int = 1  # bumped whenever the recipe changes what it renders; stored with every result
    attribution: bool = False  # the render also returns where the objective's gradient went (MACO's transparency)


# Coarse-to-fine schedule of the default recipe, chosen with the benchmark (docs/BENCHMARKS.md): a quarter of the
# steps at 1/4 size, 40 % at 1/2, 20 % at 3/4 and the last 15 % at full size. Against every step at full size it
# renders about 3x faster and keeps the high-frequency share near that of photos; with Adam at 0.2 (coarse
# octaves move only low frequencies, so a large step is safe) it reaches Lucent's activation at 128 steps.
OCTAVES = ((0.0, 1 / 4), (0.25, 0.5), (0.65, 0.75), (0.85, 1.0))


def natural_channel(layer: str, channels: list[int]) -> Objective:
    """The channel's pre-ReLU mean; at conv1_1, linear in the pixels, its rectified mean (the plain mean of a
    fixed-contrast image hardly moves: version 3 answered it with flat blobs of extreme colour)."""
    return rectified(layer, channels) if layer == "conv1_1" else channel(layer, channels)


METHODS: dict[str, Method] = {
    "fourier": Method(
        "fourier",
        "modern: Fourier-space image with decorrelated colour, its contrast fixed as in photos before the "
        "sigmoid (no value pushed to 0 or 255), coarse-to-fine (1/4, 1/2, 3/4, full size) with the step renewed "
        "at each size, random jitter/scale/rotation and a slight blur each step, Adam (lr 0.2) on the pre-ReLU "
        "channel mean (rectified at conv1_1)",
        fourier_image,
        natural_channel,
        blurred_transforms,
        "pre",
        0.2,
        OCTAVES,
        5,
    ),
    "maco": Method(
        "maco",
        "MACO (Fel et al. 2023): the Fourier magnitude fixed to ImageNet's mean spectrum, only the phase "
        "optimized, decorrelated colour and sigmoid, coarse-to-fine, the same objective and geometric transforms as "
        "fourier (no blur); returns its attribution (transparency) map",
        maco_image,
        natural_channel,
        standard_transforms,
        "pre",
        0.2,
        OCTAVES,
        1,
        attribution=True,
    ),
    "seed": Method(
        "seed",
        "baseline (the original write-up): pixel-space noise image, MSE against a map filled with the squared "
        "maximum activation, post-ReLU, no transforms, Adam",
        pixel_image,
        seed_mse,
        lambda: None,
        "post",
        0.05,
    ),
}
DEFAULT_METHOD = "fourier"
