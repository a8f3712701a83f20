"""Quality metrics for rendered images.

- activation ratio: an image's channel activation over the channel's maximum over natural photos
  (random crops at several scales of photos shipped inside scikit-image and scikit-learn; nothing downloaded),
  with the maxima cached on disk per weights, layer and size;
- transformation robustness: the activation kept under random shifts, scales, rotations and slight blur;
- high-frequency power fraction of the image spectrum (natural photos are low, noise is high);
- naturalness: the share of clipped pixel values, colourfulness (Hasler and Süsstrunk 2003) and the distance of
  the image's colour distribution to the bundled photos', each with the photos' own values for scale;
- blank / noise / dead / saturated flags (the gallery's failure rules use these);
- diversity across seeds.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..base.corpus import bundled, load_rgb
from ..engine.model import VGGFeatures
from ..engine.render import channel_activation
from ..engine.transforms import BatchRNG, Compose, Jitter, RandomRotate, RandomScale, resample

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


# ------------------------------------------------------------------------------------------------ naturalness
CLIP_LOW, CLIP_HIGH = 2, 253  # 8-bit values at the ends of the range: detail there is lost
REFERENCE_SIDE = 128  # the bundled photos' centre crops are judged at this side


def clipped_share(image: np.ndarray) -> float:
    """Share of the 8-bit values (every channel of every pixel) at the ends of the range (0-2 or 253-255)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.round(np.asarray(img, dtype=np.float64)), 0, 255)
    return float(((img <= CLIP_LOW) | (img >= CLIP_HIGH)).mean())


def colourfulness(image: np.ndarray) -> float:
    """Hasler and Süsstrunk's (2003) colourfulness M3 of an RGB image in 0-255 units: the spread and mean of the
    opponent channels rg = R - G and yb = (R + G) / 2 - B. Grey is 0; photos score about 10-100, a saturated
    rainbow over 150."""
    img = np.asarray(image, dtype=np.float64)[..., :3]
    rg = img[..., 0] - img[..., 1]
    yb = 0.5 * (img[..., 0] + img[..., 1]) - img[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


_DIRECTIONS = 24  # projections of the sliced distance
_QUANTILES = np.linspace(0.005, 0.995, 100)


def _directions() -> np.ndarray:
    """Fixed unit vectors in RGB space: the three axes, the grey axis and 20 more spread over the sphere."""
    rng = np.random.default_rng(1234)
    d = np.vstack([np.eye(3), np.ones((1, 3)), rng.normal(size=(_DIRECTIONS - 4, 3))])
    return d / np.linalg.norm(d, axis=1, keepdims=True)


DIRECTIONS = _directions()


def _colour_quantiles(pixels: np.ndarray) -> np.ndarray:
    """(directions, quantiles): the quantiles of the pixel colours projected on each direction."""
    return np.quantile(pixels.reshape(-1, 3).astype(np.float64) @ DIRECTIONS.T, _QUANTILES, axis=0).T


def centre_crop(photo: np.ndarray, side: int = REFERENCE_SIDE) -> np.ndarray:
    """The largest centred square of ``photo``, resized to ``side`` (uint8)."""
    h, w = photo.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(np.ascontiguousarray(photo[y:y + s, x:x + s, :3]))
    return np.asarray(crop.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0))


@functools.lru_cache(maxsize=1)
def photo_reference() -> dict:
    """The bundled photos' centre crops, measured as the images are: each photo's clipped share and
    colourfulness, their pooled colour distribution, and each photo's colour distance to the others (leave one
    out). Thresholds and the app's "photos: ..." ranges are read from here, never from rendered images."""
    corpus = bundled()
    crops = {name.split("/")[-1]: centre_crop(load_rgb(corpus.path(name))) for name in corpus.images}
    quant = {name: _colour_quantiles(c) for name, c in crops.items()}
    pooled = _colour_quantiles(np.concatenate([c.reshape(-1, 3) for c in crops.values()]))
    loo = {}
    for name, c in crops.items():
        others = np.concatenate([o.reshape(-1, 3) for n, o in crops.items() if n != name])
        loo[name] = float(np.abs(quant[name] - _colour_quantiles(others)).mean())
    return {
        "photos": sorted(crops),
        "clipped": {n: clipped_share(c) for n, c in crops.items()},
        "colourfulness": {n: colourfulness(c) for n, c in crops.items()},
        "colour_distance": loo,
        "pooled_quantiles": pooled,
    }


def colour_distance(image: np.ndarray) -> float:
    """How far the image's colours are from the bundled photos': the sliced Wasserstein-1 distance (0-255
    units, averaged over fixed directions in RGB) between its pixel colours and the photos' pooled colours.
    A photo against the others scores about 10-50; a flat pure primary over 100."""
    ref = photo_reference()["pooled_quantiles"]
    return float(np.abs(_colour_quantiles(np.asarray(image)[..., :3]) - ref).mean())


def naturalness(image: np.ndarray) -> dict:
    """The three naturalness measures of one 8-bit image, JSON-ready."""
    return {"clipped": round(clipped_share(image), 4), "colourfulness": round(colourfulness(image), 2),
            "colour_distance": round(colour_distance(image), 2)}


def photo_range(measure: str) -> tuple[float, float, float]:
    """(lowest, median, highest) of a naturalness measure over the bundled photos, for scale."""
    vals = np.array(list(photo_reference()[measure].values()))
    return float(vals.min()), float(np.median(vals)), float(vals.max())


def saturation_threshold() -> float:
    """Above this clipped share an image is ``saturated``: more of its values at the ends of the range than in
    any bundled photo (a photo with a black background, retina, is the highest at about 0.22)."""
    return photo_range("clipped")[2]


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
    - ``noise``: the image is mostly high frequencies (share above ``NOISE_HF``), finer than any photo: pixel noise,
      or a texture at the pixel scale. No statistic of the spectrum's shape tells the two apart (a dot lattice puts
      15-63 % of its high-frequency power into the strongest 2 % of frequencies, white noise blurred by 0.7 px 20 %),
      so the evidence says both;
    - ``saturated``: more of its 8-bit values are clipped (0-2 or 253-255) than in any bundled photo.
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
        evidence.append(f"noise: high-frequency power {hf:.2f} > {NOISE_HF}, finer than any photo (pixel noise, "
                        "or a texture at the pixel scale)")
    clipped, limit = clipped_share(image), saturation_threshold()
    if clipped > limit:
        flags.append("saturated")
        evidence.append(f"saturated: {clipped:.0%} of pixel values clipped to 0-2 or 253-255 > {limit:.0%} "
                        "(the most of any bundled photo)")
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
        **naturalness(image),
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
        text = f"{ratio:.{digits}f}×"
        if float(text[:-1]) == 0:  # "-0.0×" reads as a failure: it is a render that hardly moves the channel
            text = f"< 0.{'0' * digits}5×" if ratio > 0 else "≤ 0×"
        return text, f"Final activation {final:.4g} over the best photo position's {natural:.4g}"
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
ROBUSTNESS_FAMILIES = ("standard", "wide")


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0.05:
        return x
    from torchvision.transforms.functional import gaussian_blur  # heavy: only robustness measures need it

    k = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(x, [k, k], [sigma, sigma])


def _colour_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    from torchvision.transforms.functional import adjust_brightness, adjust_contrast, adjust_saturation

    return adjust_saturation(adjust_contrast(adjust_brightness(x, brightness), contrast), saturation).clamp(0, 1)


def wide_transform(x: torch.Tensor, trial: int, gen: torch.Generator) -> torch.Tensor:
    """One draw of the wide family, harder than any recipe's training stack: scale 0.7-1.3, rotation +-25 deg,
    shifts up to 15 % of the side, Gaussian blur up to sigma 1.5 px, colour jitter (brightness, contrast and
    saturation 0.7-1.3). Trials cycle through each alone (scale, rotation, shift, blur, colour) and then all of
    them at once."""
    def u(lo: float, hi: float) -> float:
        return float(lo + (hi - lo) * torch.rand(1, generator=gen))

    kind = ("scale", "rotate", "shift", "blur", "colour")[trial] if trial < 5 else "all"
    n = x.shape[0]
    m = torch.eye(3).repeat(n, 1, 1)
    if kind in ("scale", "all"):
        s = u(0.7, 1.3)
        m = m @ torch.diag(torch.tensor([1 / s, 1 / s, 1.0]))
    if kind in ("rotate", "all"):
        a = math.radians(u(-25, 25))
        r = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        m = m @ r
    if kind in ("shift", "all"):
        t = torch.eye(3)
        t[0, 2], t[1, 2] = 2 * u(-0.15, 0.15), 2 * u(-0.15, 0.15)
        m = m @ t
    if kind in ("scale", "rotate", "shift", "all"):
        x = resample(x, m)
    if kind in ("blur", "all"):
        x = _gaussian_blur(x, u(0.5, 1.5) if kind == "blur" else u(0.0, 1.5))
    if kind in ("colour", "all"):
        x = _colour_jitter(x, u(0.7, 1.3), u(0.7, 1.3), u(0.7, 1.3))
    return x


@torch.no_grad()
def robustness(model: VGGFeatures, layer: str, images: np.ndarray, channels: list[int], trials: int | None = None,
               seed: int = 0, family: str = "standard") -> np.ndarray:
    """Per image: its mean activation under random transforms over its clean activation. 1.0 means fully robust;
    adversarial noise falls towards 0 or below.

    ``standard`` (8 trials): shifts (+-6 %), scales (0.9-1.1), rotations (+-10 deg) and a slight blur together.
    ``wide`` (12 trials, :func:`wide_transform`): each of scale 0.7-1.3, rotation +-25 deg, shift up to 15 %,
    blur up to sigma 1.5 px and colour jitter alone, then all at once."""
    if family not in ROBUSTNESS_FAMILIES:
        raise ValueError(f"unknown robustness family {family!r}")
    trials = trials or (8 if family == "standard" else 12)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    clean = channel_activation(model, layer, x, channels)
    gen = torch.Generator().manual_seed(seed)
    rng = BatchRNG([gen] * len(channels))
    stack = Compose([Jitter(0.06), RandomScale([0.9, 0.95, 1.0, 1.05, 1.1]), RandomRotate(range(-10, 11))])
    blur = torch.tensor([1.0, 2.0, 1.0])
    kernel = (blur[:, None] * blur[None, :] / 16).expand(3, 1, 3, 3)
    total = np.zeros(len(channels))
    for trial in range(trials):
        if family == "standard":
            t = stack(x, rng)
            t = F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
        else:
            t = wide_transform(x, trial, gen)
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
