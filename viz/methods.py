"""Render methods: each a recipe naming its parameterization, objective, transforms and defaults.

A method says *how* to render; a view (:mod:`viz.views`) says *what*: both are recorded in the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .objectives import Objective, channel, seed_mse
from .param import Parameterization, fourier_image, pixel_image
from .transforms import Compose, standard_transforms


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


# Coarse-to-fine schedule of the default recipe, chosen with the benchmark (docs/BENCHMARKS.md): against the same
# recipe at full size every step it renders over 3x faster, brings the high-frequency share down to that of natural
# photos and raises robustness, at some cost in raw activation (still several times the best photo crop).
OCTAVES = ((0.0, 1 / 3), (0.35, 0.5), (0.7, 0.75), (0.9, 1.0))


METHODS: dict[str, Method] = {
    "fourier": Method(
        "fourier",
        "modern: Fourier-space image with decorrelated colour and sigmoid, coarse-to-fine (1/3, 1/2, 3/4, full "
        "size), random jitter/scale/rotation each step, Adam on the pre-ReLU channel mean",
        fourier_image,
        channel,
        standard_transforms,
        "pre",
        0.05,
        OCTAVES,
        2,
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
