"""A visitor's own photo: which channels of a layer fire most on it, and where (activation maps)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..base.errors import VizError
from ..engine.layers import get_layer
from .examples import bundled_examples, resized

SHORT_SIDE = 224  # the network's native scale
MAX_LONG_SIDE = 672  # a panorama is cut to this after resizing (bounded work per photo)


@dataclass
class PhotoResponse:
    image: np.ndarray  # the photo as the network saw it (short side 224), RGB uint8
    maps: np.ndarray  # (C, h, w) pre-ReLU maps of the layer
    peak: np.ndarray  # (C,) strongest response anywhere in the photo
    reference: np.ndarray  # (C,) the 99.9th percentile of the channel's responses in the bundled photos

    @property
    def score(self) -> np.ndarray:
        """Peak over reference: 1.0 = as strong as the channel's top 0.1 % of positions in the bundled photos (the
        maximum itself would tie every channel whose best position is in a bundled photo that is shown)."""
        ref = np.where(self.reference > 0, self.reference, np.nan)
        return self.peak / ref

    def ranked(self, n: int = 12) -> list[int]:
        score = np.nan_to_num(self.score, nan=-np.inf)
        return [int(c) for c in np.argsort(-score)[:n]]


def network_input(image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """A photo (RGB uint8) as the network sees it: (1, 3, H, W) in [0, 1] with the short side 224 and the long
    side cut to 672 (bounded work and memory per photo, whatever was uploaded), and the same pixels as uint8."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
        raise VizError("the photo must be an RGB image of at least 8 x 8 pixels")
    keep = math.ceil(min(image.shape[:2]) * MAX_LONG_SIDE / SHORT_SIDE)  # the long side cut before resizing: the
    x, _ = resized(image[:keep, :keep], SHORT_SIDE)  # work and memory are bounded whatever the photo's shape
    x = x[..., :MAX_LONG_SIDE, :MAX_LONG_SIDE]
    shown = (x[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return x, shown


@torch.no_grad()
def respond(model, image: np.ndarray, layer: str) -> PhotoResponse:
    """One forward pass of ``image`` (RGB uint8) at the native scale up to ``layer``."""
    lay = get_layer(layer)
    x, shown = network_input(image)
    maps = model.cut(lay)(x.to(next(model.parameters()).device))[0].float().cpu()
    ref = np.array([ch["p999"] for ch in bundled_examples(model, lay.name).channels], dtype=np.float64)
    return PhotoResponse(shown, maps.numpy(), maps.flatten(1).amax(dim=1).numpy(), ref)


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The activation map (positive part, scaled to its maximum) over the photo: where the channel is silent the
    photo is dimmed, where it fires the photo stays bright under an orange-to-yellow tint."""
    heat = torch.from_numpy(np.clip(amap, 0, None))[None, None].float()
    heat = F.interpolate(heat, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    top = heat.max()
    heat = heat / top if top > 0 else heat
    # black -> orange -> yellow
    colour = np.stack([np.clip(heat * 2, 0, 1), np.clip(heat * 1.6 - 0.35, 0, 1), np.clip(heat * 2 - 1.4, 0, 1)], -1)
    weight = (alpha * heat)[..., None]
    base = image.astype(np.float64) / 255 * (0.25 + 0.75 * heat[..., None])
    out = base * (1 - weight) + colour * weight
    return (out * 255).round().clip(0, 255).astype(np.uint8)
