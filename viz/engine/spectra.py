"""Natural-image magnitude spectra for MACO (:class:`viz.engine.param.PhaseImage`), in decorrelated colour.

Two sources, each a (3, h, h // 2 + 1) real-FFT magnitude (rows in ``fftfreq`` order):

- ``imagenet``: the mean ImageNet spectrum that MACO's authors publish (the file Horama downloads, unreachable
  here), as shipped in the ``xplique`` 2.0.2 wheel on PyPI (``xplique/features_visualizations/
  spectrum_decorrelated.npy``, MIT licence, copyright 2020 IRT Antoine de Saint Exupery et Universite Paul
  Sabatier Toulouse III; the licence text is ``viz/data/LICENSE-xplique.txt``). Stored in ``viz/data/maco_spectrum_imagenet.npz`` as a float16 log-magnitude (1.6 MB -> 0.6 MB;
  within 0.4 % of the original everywhere).
- ``photos``: estimated here from the photos bundled in scikit-image and scikit-learn: the mean magnitude of
  random square crops in decorrelated colour (11 photos, so noisier, and no download at all).

The benchmark compares both (``python -m viz bench``); :data:`DEFAULT_SPECTRUM` is the one MACO uses.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..base.corpus import bundled, load_rgb
from .colour import ColorDecorrelation

SPECTRA = ("imagenet", "photos")
DEFAULT_SPECTRUM = "imagenet"
_IMAGENET = Path(__file__).resolve().parents[1] / "data" / "maco_spectrum_imagenet.npz"
PHOTO_SPECTRUM_SIDE = 256


@functools.lru_cache(maxsize=2)
def natural_spectrum(source: str = DEFAULT_SPECTRUM) -> torch.Tensor:
    """The (3, h, h // 2 + 1) magnitude spectrum named ``source`` (see the module docstring)."""
    if source == "imagenet":
        with np.load(_IMAGENET) as f:
            return torch.from_numpy(np.exp(f["log_magnitude"].astype(np.float32)))
    if source == "photos":
        return photo_spectrum()
    raise ValueError(f"unknown spectrum {source!r}: choose {' or '.join(SPECTRA)}")


def photo_spectrum(side: int = PHOTO_SPECTRUM_SIDE, crops: int = 8, seed: int = 0) -> torch.Tensor:
    """Mean real-FFT magnitude of ``crops`` random square crops (a third to all of the short side, resized to
    ``side``) of every bundled photo, each crop in decorrelated colour (the inverse of
    :class:`~viz.engine.colour.ColorDecorrelation`) with its mean removed."""
    rng = np.random.default_rng(seed)
    corpus, decorrelate = bundled(), ColorDecorrelation()
    total = torch.zeros(3, side, side // 2 + 1)
    count = 0
    for name in corpus.images:
        photo = torch.from_numpy(load_rgb(corpus.path(name)).copy()).permute(2, 0, 1).float().div(255)[None]
        h, w = photo.shape[-2:]
        for _ in range(crops):
            s = int(min(h, w) * rng.uniform(1 / 3, 1.0))
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crop = F.interpolate(photo[..., y:y + s, x:x + s], size=(side, side), mode="bilinear",
                                 antialias=True, align_corners=False)
            crop = decorrelate.inverse(crop - crop.mean(dim=(2, 3), keepdim=True))
            total += torch.fft.rfft2(crop[0], norm="ortho").abs()
            count += 1
    return total / count
