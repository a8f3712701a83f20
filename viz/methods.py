"""Render methods: each a recipe naming its parameterization, objective, transforms and defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .objectives import ChannelMean, Objective, SeedMSE
from .param import FourierImage, Parameterization, PixelImage
from .transforms import Compose, standard_transforms


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    make_param: Callable[[list[torch.Generator], int], Parameterization]
    make_objective: Callable[[list[int]], Objective]
    make_transforms: Callable[[], Compose | None]
    activation: str  # "pre" or "post": which side of the target conv's ReLU the objective reads
    lr: float


METHODS: dict[str, Method] = {
    "fourier": Method(
        "fourier",
        "modern: Fourier-space image with decorrelated colour and sigmoid, random pad/jitter/scale/rotation "
        "each step, Adam on the pre-ReLU channel mean",
        lambda gens, size: FourierImage(gens, size),
        ChannelMean,
        standard_transforms,
        "pre",
        0.05,
    ),
    "seed": Method(
        "seed",
        "baseline (the original write-up): pixel-space noise image, MSE against a map filled with the squared "
        "maximum activation, post-ReLU, no transforms, Adam",
        lambda gens, size: PixelImage(gens, size),
        SeedMSE,
        lambda: None,
        "post",
        0.05,
    ),
}
DEFAULT_METHOD = "fourier"
