"""A photo taken apart: the few groups of channels a layer sees in it (Olah et al. 2018, "The Building Blocks of
Interpretability"), and the pixels that drive a group or a channel.

:func:`photo_factors` runs the photo through the network up to a layer (the same bounded input as the "Your
photo" page: short side 224 px, long side at most 672 px) and factorizes the post-ReLU map, positions x channels,
with non-negative matrix factorization into ``k`` groups: ``A ≈ W H``. Each group has

- a **map** (a column of ``W``, h x w): where in the photo it is;
- a **direction** (a row of ``H``, unit length over the layer's channels): what it is, rendered with the
  ``direction`` objective (:func:`viz.engine.objectives.direction`);
- a **share**: its part of the layer's total activation (``sum(W_i H_i) / sum(A)``);
- its **top channels**, by weight in the direction.

Groups are ordered by share, largest first; the same photo, layer, k and seed give the same groups.
:func:`attribution` is gradient x input (Simonyan et al. 2013; Shrikumar et al. 2016) of a group's direction or
of one channel, summed over the layer's positions: the pixels that drive it. No Streamlit here.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..base.errors import VizError
from ..engine.layers import get_layer, parse_channel
from ..engine.objectives import as_direction
from ..engine.settings import parse_int
from .photo import network_input

MIN_K, MAX_K = 2, 8
DEFAULT_K = 6
MAX_ITER = 400
FIT_POSITIONS = 4096  # a larger map (conv1, conv2 of a 224 px photo) is average-pooled for the fit of the directions
REFINE_ITER = 30  # ... and its full-resolution maps then take this many multiplicative updates, directions fixed
# each group's colour: a colour name the dashboard's Markdown can write (its legend) and the RGB of the coloured
# photo; the last one is the text's own colour
PALETTE = [("red", (255, 75, 75)), ("blue", (28, 131, 225)), ("yellow", (250, 202, 43)), ("green", (33, 195, 84)),
           ("violet", (128, 61, 245)), ("orange", (255, 164, 33)), ("gray", (128, 132, 149)), ("", (49, 51, 63))]


def check_k(k: object) -> int:
    return parse_int("k (the number of groups)", k, MIN_K, MAX_K)


@dataclass
class Factors:
    """The groups a layer sees in one photo, largest share first."""

    layer: str
    seed: int
    image: np.ndarray  # (H, W, 3) uint8: the photo as the network saw it
    maps: np.ndarray  # (k, h, w) float32: where each group is (NMF's W, scaled by its direction's length)
    directions: np.ndarray  # (k, C) float32, unit length, non-negative: what each group is
    shares: np.ndarray  # (k,) each group's part of the layer's total (post-ReLU) activation
    error: float  # relative reconstruction error |A - WH| / |A| (Frobenius)
    seconds: float = 0.0

    @property
    def k(self) -> int:
        return len(self.directions)

    def top_channels(self, group: int, n: int = 5) -> list[tuple[int, float]]:
        """The ``n`` channels with the largest weight in ``group``'s direction: (channel, weight)."""
        d = self.directions[group]
        order = np.argsort(-d, kind="stable")[:n]
        return [(int(c), float(d[c])) for c in order if d[c] > 0]

    def strongest(self) -> np.ndarray:
        """(h, w) the group strongest at each position of the map."""
        return self.maps.argmax(axis=0)

    def record(self, n: int = 5) -> dict:
        """JSON-ready summary (the CLI's line)."""
        return {"layer": self.layer, "k": self.k, "seed": self.seed, "map_size": list(self.maps.shape[1:]),
                "image_size": list(self.image.shape[:2]), "shares": [round(float(s), 4) for s in self.shares],
                "top_channels": [[c for c, _ in self.top_channels(i, n)] for i in range(self.k)],
                "error": round(self.error, 4), "seconds": round(self.seconds, 3)}


def factorize(acts: np.ndarray, k: int, seed: int = 0,
              fit_positions: int = FIT_POSITIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """NMF of a non-negative map (C, h, w) into ``k`` groups: (maps (k, h, w), unit directions (k, C), shares (k,),
    relative error), largest share first. Deterministic for a seed (NNDSVDa start, coordinate descent).

    A map of more than ``fit_positions`` positions is average-pooled to fewer for the fit (a mixture of directions
    pools into the same mixture: the directions are the same), and the full-resolution maps are then fitted with
    the directions fixed (multiplicative updates from the pooled maps, enlarged): conv1_1 of a 224 px photo in a
    third of the time."""
    from sklearn.decomposition import NMF  # heavy (about 1.5 s to import): only when a photo is factorized

    k = check_k(k)
    if not isinstance(acts, np.ndarray) or acts.ndim != 3:
        raise VizError("a map to factorize is (channels, height, width)")
    c, h, w = acts.shape
    a = np.ascontiguousarray(acts.reshape(c, h * w).T, dtype=np.float32)  # positions x channels
    if not np.isfinite(a).all():
        raise VizError("the layer's map has NaN or infinite values")
    if (a < 0).any():
        raise VizError("NMF needs a non-negative map (post-ReLU)")
    total = float(a.sum(dtype=np.float64))
    if total <= 0:
        raise VizError("the layer does not respond to this photo at all (its map is zero): try a lower layer")
    if k > min(a.shape):
        raise VizError(f"the map has {h} x {w} positions and {c} channels: at most {min(a.shape)} groups")
    scale = float(a.max())
    pool = int(np.ceil(np.sqrt(h * w / fit_positions))) if h * w > fit_positions else 1
    fit = a
    if pool > 1:
        t = torch.from_numpy(acts)[None]
        fit = F.avg_pool2d(t, pool, ceil_mode=True)[0].flatten(1).T.contiguous().numpy()
    nmf = NMF(n_components=k, init="nndsvda", solver="cd", beta_loss="frobenius", max_iter=MAX_ITER, tol=1e-4,
              random_state=int(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converging within MAX_ITER is fine for a picture of the groups
        wmat = nmf.fit_transform(fit / scale)  # scaled: the tolerance means the same at every layer
    hmat = nmf.components_.astype(np.float64)
    if pool > 1:  # the full-resolution maps, directions fixed
        ph, pw = -(-h // pool), -(-w // pool)
        w0 = torch.from_numpy(wmat.T.reshape(k, ph, pw).astype(np.float32))[None]
        w32 = F.interpolate(w0, size=(h, w), mode="bilinear", align_corners=False)[0].flatten(1).T.clamp_min(0)
        w32 = w32.numpy().astype(np.float64) + 1e-9
        ah, hh = (a / scale).astype(np.float64) @ hmat.T, hmat @ hmat.T
        for _ in range(REFINE_ITER):
            w32 *= ah / np.maximum(w32 @ hh, 1e-12)
        wmat = w32
    wmat = wmat.astype(np.float64) * scale
    norms = np.linalg.norm(hmat, axis=1)
    norms[norms == 0] = 1.0
    hmat /= norms[:, None]
    wmat *= norms[None, :]
    shares = wmat.sum(axis=0) * hmat.sum(axis=1) / total
    order = np.argsort(-shares, kind="stable")
    error = float(np.linalg.norm(a - wmat @ hmat) / max(np.linalg.norm(a), 1e-12))
    maps = wmat[:, order].T.reshape(k, h, w).astype(np.float32)
    return maps, hmat[order].astype(np.float32), shares[order], error


@torch.no_grad()
def layer_map(model, image: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """The post-ReLU map (C, h, w) of ``layer`` on the photo as the network sees it, and those pixels."""
    lay = get_layer(layer)
    x, shown = network_input(image)
    acts = model.cut(lay, relu=True)(x.to(next(model.parameters()).device))[0].float().cpu().numpy()
    return acts, shown


def photo_factors(model, image: np.ndarray, layer: str, k: int = DEFAULT_K, seed: int = 0) -> Factors:
    """The ``k`` groups ``layer`` sees in ``image`` (RGB uint8, any size: resized like the photo page)."""
    k = check_k(k)
    seed = parse_int("seed", seed, 0, 2**31 - 1)
    begin = time.perf_counter()
    acts, shown = layer_map(model, image, layer)
    maps, directions, shares, error = factorize(acts, k, seed)
    return Factors(get_layer(layer).name, seed, shown, maps, directions, shares, error,
                   time.perf_counter() - begin)


def upsampled(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(k, h, w) -> (k, H, W), bilinear."""
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0].numpy()


def group_picture(f: Factors) -> np.ndarray:
    """The photo coloured by the strongest group at each position (the legend's colours, :data:`PALETTE`): the
    stronger the group there, the more of its colour; where no group is active the photo is dimmed."""
    up = upsampled(f.maps, f.image.shape[:2])
    best = up.argmax(axis=0)
    strength = up.max(axis=0)
    top = float(np.percentile(strength, 99)) or 1.0
    s = np.sqrt(np.clip(strength / top, 0, 1))[..., None]
    colours = np.array([rgb for _, rgb in PALETTE], dtype=np.float64)[best] / 255
    photo = f.image.astype(np.float64) / 255
    grey = photo.mean(axis=2, keepdims=True)
    out = (0.35 + 0.4 * s) * (0.5 * photo + 0.5 * grey) * (1 - 0.6 * s) + colours * 0.6 * s
    return (out * 255).round().clip(0, 255).astype(np.uint8)


def attribution(model, image: np.ndarray, layer: str, vector=None, channel: int | None = None) -> np.ndarray:
    """Gradient x input for a group's ``vector`` (its direction) or one ``channel``: the post-ReLU activation
    along it, summed over the layer's positions, differentiated with respect to the network's (normalized)
    input and multiplied by it, summed over the colours. (H, W) float32 over the photo as the network sees it:
    positive where the pixels drive it up."""
    lay = get_layer(layer)
    if (vector is None) == (channel is None):
        raise VizError("attribution is for one group's direction or one channel")
    if channel is not None:
        channel = parse_channel(lay, channel)
    else:
        vector = torch.from_numpy(as_direction(vector, lay.channels))
    x, _ = network_input(image)
    cut = model.cut(lay, relu=True)
    device = next(model.parameters()).device
    with torch.enable_grad():
        xn = cut.normalize(x.to(device)).detach().requires_grad_(True)
        acts = cut.body(xn)[0].float()
        target = acts[channel].sum() if channel is not None else torch.einsum("chw,c->", acts, vector.to(device))
        (grad,) = torch.autograd.grad(target, xn)
    return (grad * xn.detach())[0].sum(dim=0).float().cpu().numpy()


def attribution_heat(attr: np.ndarray, blur: float = 2.5) -> np.ndarray:
    """An attribution map for the eye: its positive part, lightly blurred (pixel-level gradients are speckled),
    scaled so its 99.5th percentile is 1 (one hot pixel does not hide the rest)."""
    from scipy.ndimage import gaussian_filter  # scipy comes with scikit-learn; imported on the display path only

    pos = gaussian_filter(np.clip(attr, 0, None).astype(np.float64), blur)
    top = float(np.percentile(pos, 99.5))
    return np.clip(pos / top, 0, 1).astype(np.float32) if top > 0 else np.zeros_like(pos, dtype=np.float32)
