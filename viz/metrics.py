"""Quality metrics for rendered images.

- activation ratio: an image's channel activation over the channel's maximum over natural photos
  (random crops at several scales of photos shipped inside scikit-image and scikit-learn; nothing downloaded),
  with the maxima cached on disk per weights, layer and size;
- transformation robustness: the activation kept under random shifts, scales, rotations and slight blur;
- high-frequency power fraction of the image spectrum (natural photos are low, noise is high);
- blank / noise / dead flags (the gallery's failure rules use these);
- diversity across seeds.
"""

from __future__ import annotations

import functools
import threading


import numpy as np
import torch
import torch.nn.functional as F

from .layers import get_layer
from .model import VGGFeatures
from .weights import cache_dir

PHOTO_SCALES = (1.0, 0.5, 0.25)  # crop side as a fraction of the photo's short side
CROPS_PER_SCALE = 4


@functools.lru_cache(maxsize=1)
def natural_photos() -> tuple[np.ndarray, ...]:
    """Colour photos shipped inside installed packages (uint8, H x W x 3)."""
    import skimage.data as sk
    from sklearn.datasets import load_sample_images

    photos = [sk.astronaut(), sk.chelsea(), sk.coffee(), sk.rocket()]
    photos += list(load_sample_images().images)
    return tuple(np.ascontiguousarray(p[..., :3]) for p in photos)


def natural_crops(size: int, seed: int = 0) -> torch.Tensor:
    """Random square crops at several scales of every photo, resized to ``size`` (N, 3, size, size) in [0, 1]."""
    rng = np.random.default_rng(seed)
    crops = []
    for photo in natural_photos():
        img = torch.tensor(photo).permute(2, 0, 1).float().div(255)[None]
        h, w = photo.shape[:2]
        for frac in PHOTO_SCALES:
            side = max(8, int(min(h, w) * frac))
            for _ in range(CROPS_PER_SCALE):
                y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
                crop = img[..., y:y + side, x:x + side]
                crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False))
    return torch.cat(crops)


_natural_lock = threading.Lock()


@torch.no_grad()
def natural_max(model: VGGFeatures, layer: str, size: int, batch: int = 16) -> np.ndarray:
    """Per channel of ``layer``: the largest mean (pre-ReLU) activation over natural-photo crops at ``size``.

    Cached in memory and on disk (``<cache>/natural/<weights>_<layer>_<size>.npy``).
    """
    lay = get_layer(layer)
    safe_weights = "".join(c if c.isalnum() or c in "-_" else "_" for c in model.weights_name)
    path = cache_dir() / "natural" / f"{safe_weights}_{lay.name}_{int(size)}.npy"
    with _natural_lock:
        if path.is_file():
            try:
                arr = np.load(path)
                if arr.shape == (lay.channels,):
                    return arr
            except (OSError, ValueError):
                pass
        cut = model.cut(lay)
        device = next(model.parameters()).device
        crops = natural_crops(size)
        best = torch.full((lay.channels,), -float("inf"))
        for i in range(0, len(crops), batch):
            acts = cut(crops[i:i + batch].to(device)).float().mean(dim=(2, 3)).cpu()
            best = torch.maximum(best, acts.amax(dim=0))
        arr = best.numpy().astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npy")
        np.save(tmp, arr)
        tmp.replace(path)
        return arr


def activation_ratio(final_activation: np.ndarray, natural: np.ndarray) -> np.ndarray:
    """Image activation over the natural-photo maximum (values > 1: the image beats every photo crop).

    Where the natural maximum is not positive the ratio is undefined and reported as NaN."""
    natural = np.asarray(natural, dtype=np.float64)
    out = np.full(natural.shape, np.nan)
    ok = natural > 0
    out[ok] = np.asarray(final_activation, dtype=np.float64)[ok] / natural[ok]
    return out


