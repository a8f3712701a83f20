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


import numpy as np
import torch
import torch.nn.functional as F

from .model import VGGFeatures

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


def iter_crops(size: int, seed: int = 0):
    """Random square crops at several scales of every photo, resized to ``size``, one (1, 3, size, size) tensor in
    [0, 1] at a time (a 1024 px reference never holds all its crops at once)."""
    rng = np.random.default_rng(seed)
    for photo in natural_photos():
        img = torch.tensor(photo).permute(2, 0, 1).float().div(255)[None]
        h, w = photo.shape[:2]
        for frac in PHOTO_SCALES:
            side = max(8, int(min(h, w) * frac))
            for _ in range(CROPS_PER_SCALE):
                y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
                crop = img[..., y:y + side, x:x + side]
                yield F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def natural_crops(size: int, seed: int = 0) -> torch.Tensor:
    """Every crop of :func:`iter_crops` as one (N, 3, size, size) tensor in [0, 1]."""
    return torch.cat(list(iter_crops(size, seed)))


def activation_ratio(final_activation: np.ndarray, natural: np.ndarray) -> np.ndarray:
    """Image activation over the natural-photo maximum (values > 1: the image beats every photo crop).

    Where the natural maximum is not positive the ratio is undefined and reported as NaN."""
    natural = np.asarray(natural, dtype=np.float64)
    out = np.full(natural.shape, np.nan)
    ok = natural > 0
    out[ok] = np.asarray(final_activation, dtype=np.float64)[ok] / natural[ok]
    return out




# ------------------------------------------------------------------------------------------ image statistics
HF_CUTOFF = 0.25  # cycles per pixel; Nyquist is 0.5


def hf_fraction(image: np.ndarray) -> float:
    """Share of the image's (mean-removed, luminance) spectral power above ``HF_CUTOFF`` cycles/pixel.

    White noise scores about 0.8 (the area outside that radius); natural photos score a few percent.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    img = img - img.mean()
    power = np.abs(np.fft.rfft2(img)) ** 2
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.rfftfreq(img.shape[1])[None, :]
    weight = np.where(fx > 0, 2.0, 1.0)  # rfft keeps one half of the symmetric spectrum
    total = (power * weight).sum()
    if total <= 0:
        return 0.0
    return float((power * weight)[np.sqrt(fx**2 + fy**2) > HF_CUTOFF].sum() / total)


def image_std(image: np.ndarray) -> float:
    """Pixel standard deviation in [0, 1] units (a blank image is close to 0)."""
    return float(np.asarray(image, dtype=np.float64).std() / 255.0)


# ------------------------------------------------------------------------------------------------ flag rules
# The gallery's failure rules. A flagged channel is retried (another seed, more steps) before it is kept flagged.
BLANK_STD = 0.065  # below this pixel std the image is (nearly) uniform; the seed's untouched start is 0.058
NOISE_HF = 0.35  # above this high-frequency power share it is mostly pixel noise (natural crops: <= 0.22)
RISE_MIN = 1e-3  # the objective must rise by at least this share of its scale


def objective_rise(history: np.ndarray) -> float:
    """End-of-run objective (mean of the last tenth of the steps) minus the first step's."""
    h = np.asarray(history, dtype=np.float64)
    if h.size == 0:
        return 0.0
    tail = h[-max(1, len(h) // 10):]
    return float(tail.mean() - h[0])


def quality_flags(image: np.ndarray, history: np.ndarray, final_activation: float,
                  natural: float | None) -> tuple[list[str], str]:
    """Apply the failure rules; return (flags, one-line evidence: each flag's reason, led by its name). Flags:

    - ``dead``: the channel is never positive, neither on any natural-photo crop nor after optimization;
    - ``no_rise``: the objective did not rise over the run;
    - ``blank``: the image is nearly uniform (pixel std below ``BLANK_STD``);
    - ``noise``: the image is mostly high-frequency noise (share above ``NOISE_HF``).
    """
    flags: list[str] = []
    evidence: list[str] = []
    if natural is not None and natural <= 0 and final_activation <= 0:
        flags.append("dead")
        evidence.append(f"dead: never positive on natural photos (max {natural:.3g}) nor after optimization "
                        f"({final_activation:.3g})")
    h = np.asarray(history, dtype=np.float64)
    rise = objective_rise(h)
    scale = max(1.0, float(np.abs(h).max())) if h.size else 1.0
    if rise <= RISE_MIN * scale:
        flags.append("no_rise")
        first, last = (h[0], h[-1]) if h.size else (0.0, 0.0)
        evidence.append(f"no_rise: objective did not rise ({first:.3g} -> {last:.3g})")
    std = image_std(image)
    if std < BLANK_STD:
        flags.append("blank")
        evidence.append(f"blank: pixel std {std:.3f} < {BLANK_STD}")
    hf = hf_fraction(image)
    if hf > NOISE_HF:
        flags.append("noise")
        evidence.append(f"noise: high-frequency power {hf:.2f} > {NOISE_HF}")
    return flags, "; ".join(evidence)


def summarize(image: np.ndarray, history: np.ndarray, final_activation: float, natural: float | None) -> dict:
    """Every per-image metric and the flag rules' verdict, JSON-ready."""
    flags, evidence = quality_flags(image, history, final_activation, natural)
    ratio = None
    if natural is not None:
        r = activation_ratio(np.array([final_activation]), np.array([natural]))[0]
        ratio = None if not np.isfinite(r) else round(float(r), 4)
    return {
        "final_activation": round(float(final_activation), 4),
        "natural_max": None if natural is None else round(float(natural), 4),
        "activation_ratio": ratio,
        "std": round(image_std(image), 4),
        "hf_fraction": round(hf_fraction(image), 4),
        "flags": flags,
        "evidence": evidence,
    }


def _unbounded(summary: dict) -> bool:
    """No photo crop activates the channel (maximum <= 0, so no ratio) but the image does."""
    natural = summary["natural_max"]
    return summary["activation_ratio"] is None and natural is not None and summary["final_activation"] > 0


def versus_photos(summary: dict, digits: int = 2) -> tuple[str, str]:
    """How a result compares with the best natural-photo crop, for people: (short text, one-line explanation).

    ``summary`` holds ``final_activation``, ``natural_max`` and ``activation_ratio`` (a :func:`summarize` result
    or a gallery record). An unbounded ratio (see :func:`_unbounded`) is shown as "∞×" rather than left blank."""
    ratio, final, natural = summary["activation_ratio"], summary["final_activation"], summary["natural_max"]
    if ratio is not None:
        return f"{ratio:.{digits}f}×", f"Final activation {final:.4g} over the best photo position's {natural:.4g}"
    if _unbounded(summary):
        return "∞×", f"No photo position activates this channel (best {natural:.4g}); the image reaches {final:.4g}"
    if natural is None:
        return "n/a", "The photo reference is not known for this result"
    return "n/a", f"Neither the image ({final:.4g}) nor any photo position ({natural:.4g}) activates this channel"


def strength(summary: dict) -> float:
    """Sort key for "strongest first": the activation ratio; unbounded ("∞×") first, undefined last."""
    if summary["activation_ratio"] is not None:
        return float(summary["activation_ratio"])
    return float("inf") if _unbounded(summary) else float("-inf")


# ------------------------------------------------------------------------------- robustness and diversity
@torch.no_grad()
def robustness(model: VGGFeatures, layer: str, images: np.ndarray, channels: list[int], trials: int = 8,
               seed: int = 0) -> np.ndarray:
    """Per image: mean activation under random shifts (±6 %), scales (0.9-1.1), rotations (±10°) and a slight
    blur, over its clean activation. 1.0 means fully robust; adversarial noise falls towards 0 or below."""
    from .transforms import BatchRNG, Compose, Jitter, RandomRotate, RandomScale
    from .render import channel_activation

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    clean = channel_activation(model, layer, x, channels)
    gen = torch.Generator().manual_seed(seed)
    rng = BatchRNG([gen] * len(channels))
    stack = Compose([Jitter(0.06), RandomScale([0.9, 0.95, 1.0, 1.05, 1.1]), RandomRotate(range(-10, 11))])
    blur = torch.tensor([1.0, 2.0, 1.0])
    kernel = (blur[:, None] * blur[None, :] / 16).expand(3, 1, 3, 3)
    total = np.zeros(len(channels))
    for _ in range(trials):
        t = stack(x, rng)
        t = F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
        total += channel_activation(model, layer, t, channels)
    kept = total / trials
    out = np.full(len(channels), np.nan)
    ok = np.abs(clean) > 1e-6
    out[ok] = kept[ok] / clean[ok]
    return out


def diversity(images: np.ndarray) -> float:
    """Mean pairwise (1 - correlation) of images rendered from different seeds: 0 = identical, ~1 = unrelated."""
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1)
    vals = []
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            if norm[i] > 0 and norm[j] > 0:
                vals.append(1 - float(flat[i] @ flat[j] / (norm[i] * norm[j])))
    return float(np.mean(vals)) if vals else 0.0
