"""Objectives: small named pieces that add, subtract and scale, in the style of Lucid/Lucent.

An :class:`Objective` maps the network's :class:`~viz.engine.probe.Activations` to one value **per image** (B,), the
quantity each image maximises. Objectives declare what they read (``reads``: layer -> channels, ``None`` for all
of them), so a render computes only that: one layer read goes through the cut network (the fast path, only the
channels read at its last conv), several through a probe that collects each layer's map on the way up.
Every objective has a ``description`` (``channel(conv5_1, 104) + 0.5 * channel(conv5_1, 25)``) that is recorded in
the settings, the result cache keys and the gallery config, so two objectives never share a result.

    >>> obj = channel("conv5_1", 104) + 0.5 * channel("conv5_1", 25)
    >>> obj.description
    'channel(conv5_1, 104) + 0.5 * channel(conv5_1, 25)'

A new objective is a function decorated with :func:`wrap_objective` returning ``(reads, inner)``; see ``neuron``.
"""

from __future__ import annotations

import functools
import hashlib
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..base.errors import VizError
from .layers import get_layer, parse_channel
from .probe import Activations, Reads

Channels = "int | Sequence[int]"  # one channel for every image, or one per image


def merge_reads(a: Reads, b: Reads) -> Reads:
    out = dict(a)
    for layer, chans in b.items():
        if layer in out:
            out[layer] = None if out[layer] is None or chans is None else out[layer] | chans
        else:
            out[layer] = chans
    return out


def reads_of(layer: str, n) -> Reads:
    """What reading channel(s) ``n`` of ``layer`` needs."""
    if isinstance(n, torch.Tensor):
        n = n.tolist()
    chans = [n] if isinstance(n, numbers.Integral) else list(n) if isinstance(n, (list, tuple)) else [n]
    if not chans or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in chans):
            raise VizError(f"channels are whole numbers, got {_fmt(n)[:40]}")
    return {layer: frozenset(int(c) for c in chans)}


def _fmt(x) -> str:
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return str(x)


class Objective:
    """A named, per-image quantity to maximise: ``objective(acts) -> (B,)``.

    ``report`` is what the render records per step (by default the objective itself); the seed baseline reports
    its channel mean while it minimises an MSE.
    """

    def __init__(self, fn: Callable[[Activations], torch.Tensor], description: str, reads: Reads,
                 report: Callable[[Activations], torch.Tensor] | None = None):
        self.fn, self.description, self.reads = fn, description, dict(reads)
        self._report = report

    def __call__(self, acts: Activations) -> torch.Tensor:
        return self.fn(acts)

    def report(self, acts: Activations, value: torch.Tensor | None = None) -> torch.Tensor:
        """What to record per image: ``value`` (this objective's, if already computed) unless told otherwise."""
        if self._report is not None:
            return self._report(acts)
        return self.fn(acts) if value is None else value

    @property
    def layers(self) -> list[str]:
        return list(self.reads)

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    # ------------------------------------------------------------------------------------------- algebra
    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Real):
            return Objective(lambda a: self(a) + float(other), f"{self.description} + {other:g}", self.reads)
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(lambda a: self(a) + other(a), f"{self.description} + {other.description}",
                         merge_reads(self.reads, other.reads))

    def __radd__(self, other: float) -> Objective:
        return self if isinstance(other, numbers.Real) and other == 0 else self.__add__(other)  # sum() starts at 0

    def __neg__(self) -> Objective:
        return Objective(lambda a: -self(a), f"-({self.description})", self.reads)

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Real):
            return self + (-float(other))
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(lambda a: self(a) - other(a), f"{self.description} - ({other.description})",
                         merge_reads(self.reads, other.reads))

    def __mul__(self, w: float | torch.Tensor) -> Objective:
        """Scale by a number, or by one weight per image (a 1-D tensor: interpolations)."""
        if isinstance(w, torch.Tensor):
            if w.dim() != 1:
                            raise VizError(f"per-image weights are one number per image (1-D), got shape {tuple(w.shape)}")
            w = w.detach().float()

            def weighted(a):
                v = self(a)
                if v.shape != w.shape:
                                    raise VizError(f"{len(w)} weights for a batch of {v.shape[0]} images")
                return w.to(v.device) * v

            return Objective(weighted, f"{_fmt(w)} * {self.description}", self.reads)
        if not isinstance(w, numbers.Real):
            return NotImplemented
        return Objective(lambda a: float(w) * self(a), f"{float(w):g} * {self.description}", self.reads)

    __rmul__ = __mul__

    def __truediv__(self, d: float) -> Objective:
        return self * (1.0 / d)

    @staticmethod
    def sum(objectives: Sequence[Objective]) -> Objective:
        """One objective adding them all (in one call, however many: no chain of nested sums)."""
        objs = list(objectives)
        if not objs:
                    raise VizError("a sum needs at least one objective")
        if len(objs) == 1:
            return objs[0]
        reads = functools.reduce(merge_reads, (o.reads for o in objs))
        return Objective(lambda a: torch.stack([o(a) for o in objs]).sum(dim=0),
                         " + ".join(o.description for o in objs), reads)


def wrap_objective(factory: Callable[..., tuple[Reads, Callable[[Activations], torch.Tensor]]]):
    """Turn ``factory(*args) -> (reads, inner)`` into a function returning a named :class:`Objective`."""

    @functools.wraps(factory)
    def make(*args, **kwargs) -> Objective:
        reads, inner = factory(*args, **kwargs)
        shown = [_fmt(a) for a in args] + [f"{k}={_fmt(v)}" for k, v in kwargs.items() if v is not None]
        return Objective(inner, f"{factory.__name__}({', '.join(shown)})", reads)

    return make


# ------------------------------------------------------------------------------------------------ objectives
@wrap_objective
def channel(layer: str, n: Channels):
    """The mean of channel ``n`` over the whole map."""
    return reads_of(layer, n), lambda acts: acts.channel(layer, n).mean(dim=(1, 2))


@wrap_objective
def rectified(layer: str, n: Channels):
    """The mean of channel ``n`` after its ReLU, read from the pre-ReLU map. Where a recipe fixes the image's
    contrast, a linear first layer's plain mean hardly depends on the image; its rectified mean is largest for
    the oriented, coloured pattern its kernel matches, tiled."""
    return reads_of(layer, n), lambda acts: acts.channel(layer, n).clamp_min(0).mean(dim=(1, 2))


def position(size: int, frac: float) -> int:
    """The map index at fraction ``frac`` of a side of ``size`` units (0.5: the centre)."""
    return min(size - 1, max(0, int(frac * size)))


@wrap_objective
def neuron(layer: str, n: Channels, x: float = 0.5, y: float = 0.5):
    """Channel ``n`` at one spatial position, given as fractions of the map (the centre by default)."""

    def inner(acts: Activations) -> torch.Tensor:
        m = acts.channel(layer, n)
        return m[:, position(m.shape[1], y), position(m.shape[2], x)]

    return reads_of(layer, n), inner


@wrap_objective
def diversity(layer: str):
    """Lucid's diversity term: minus each image's summed cosine similarity between its Gram matrix at ``layer``
    and every other image's (the images of a batch push each other apart in style)."""

    def inner(acts: Activations) -> torch.Tensor:
        a = acts.layer(layer).float()
        b = a.shape[0]
        flat = a.flatten(2)  # (B, C, h*w)
        grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)  # (B, C*C), unit norm
        sim = grams @ grams.T
        return -(sim.sum(dim=1) - sim.diagonal()) / max(1, b - 1)

    return {layer: None}, inner


def stay_close(target: torch.Tensor, label: str = "photo") -> Objective:
    """Minus the mean squared distance in pixels between the (untransformed) image and ``target`` (1 or B, 3,
    H, W) in [0, 1]; the target is resized to whatever size the optimization is at (coarse-to-fine). It reads no
    layer: ``acts.image`` is the parameterization's output."""

    def inner(acts: Activations) -> torch.Tensor:
        x = acts.image
        t = target.to(x.device, x.dtype)
        if t.shape[-2:] != x.shape[-2:]:
            t = F.interpolate(t, size=x.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
        return -((x - t) ** 2).mean(dim=(1, 2, 3))

    return Objective(inner, f"stay_close({label})", {})


def seed_mse(layer: str, n: Channels) -> Objective:
    """The seed write-up's objective: minus the MSE between the channel map and a map filled with the square of
    its current maximum (an unreachable target). On a post-ReLU map that is all zero the target is zero too, so the
    gradient vanishes and the image never leaves its starting noise: the baseline's blank squares. It reports the
    channel mean."""

    def inner(acts: Activations) -> torch.Tensor:
        maps = acts.channel(layer, n).float()
        target = maps.detach().amax(dim=(1, 2), keepdim=True) ** 2
        return -((maps - target) ** 2).mean(dim=(1, 2))

    return Objective(inner, f"seed_mse({layer}, {_fmt(n)})", reads_of(layer, n),
                     report=lambda acts: acts.channel(layer, n).float().mean(dim=(1, 2)))


# ------------------------------------------------------------------------------------------------ directions
DIGEST_CHARS = 12


def as_direction(vec, channels: int, what: str = "the direction") -> "np.ndarray":
    """A vector over a layer's ``channels`` as float32 of unit length, or :class:`VizError` in one line (wrong
    shape or length, NaN or infinite values, all zero). Only the direction counts: ``2 * v`` is ``v``."""
    try:
        v = np.asarray(vec.detach().cpu() if isinstance(vec, torch.Tensor) else vec, dtype=np.float64)
    except (TypeError, ValueError):
        raise VizError(f"{what} must be a list of numbers, one per channel") from None
    if v.ndim != 1:
        raise VizError(f"{what} must be one vector (1-D), got shape {tuple(v.shape)}")
    if len(v) != channels:
        raise VizError(f"{what} has {len(v)} values; the layer has {channels} channels")
    if not np.isfinite(v).all():
        raise VizError(f"{what} has NaN or infinite values")
    norm = float(np.sqrt((v * v).sum()))
    if norm == 0:
        raise VizError(f"{what} is all zero: it points nowhere")
    return (v / norm).astype(np.float32)


def direction_digest(vec) -> str:
    """A short digest of a unit direction (float32 bytes): how descriptions, cache keys and views name it."""
    arr = np.ascontiguousarray(vec, dtype=np.float32)
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()[:DIGEST_CHARS]


def _direction_parts(layer: str, vec) -> tuple[str, torch.Tensor]:
    lay = get_layer(layer)
    v = as_direction(vec, lay.channels)
    return lay.name, torch.from_numpy(v)


def direction(layer: str, vec) -> Objective:
    """Lucid's ``direction``: the dot product of the layer's activation at every position with ``vec`` (a vector
    over all its channels, made unit length), averaged over the map. Named by the vector's digest."""
    name, v = _direction_parts(layer, vec)

    def inner(acts: Activations) -> torch.Tensor:
        a = acts.layer(name)
        return torch.einsum("bchw,c->bhw", a.float(), v.to(a.device)).mean(dim=(1, 2))

    return Objective(inner, f"direction({name}, {direction_digest(v.numpy())})", {name: None})


def direction_cossim(layer: str, vec, power: float = 1.0) -> Objective:
    """The cosine-weighted direction (Lucid's activation atlas: ``dot * max(cossim, 0.1) ** power``) at every
    position, averaged over the map: it rewards activations that point along ``vec``, not only large ones that
    happen to have a component along it."""
    if not isinstance(power, numbers.Real) or not 0 < float(power) <= 8:
        raise VizError(f"the cosine power must be above 0 and at most 8, got {power}")
    name, v = _direction_parts(layer, vec)
    p = float(power)

    def inner(acts: Activations) -> torch.Tensor:
        a = acts.layer(name).float()
        dot = torch.einsum("bchw,c->bhw", a, v.to(a.device))
        cos = dot / a.norm(dim=1).clamp_min(1e-6)
        return (dot * cos.clamp_min(0.1) ** p).mean(dim=(1, 2))

    return Objective(inner, f"direction_cossim({name}, {direction_digest(v.numpy())}, pow={p:g})", {name: None})


def read_direction(spec, layer: str) -> "np.ndarray":
    """A direction from the command line or a form: a ``.npy`` file (one vector over the layer's channels) or
    sparse text ``"104:0.7,25:0.3"`` (channel:weight, the rest 0). Unit length; one line on anything bad."""
    lay = get_layer(layer)
    text = str(spec).strip()
    if text.lower().endswith(".npy"):
        path = Path(text)
        if not path.is_file():
            raise VizError(f"no direction file {text[:60]!r}")
        if path.stat().st_size > 1 << 20:
            raise VizError(f"the direction file {text[:60]!r} is too large for one vector")
        try:
            vec = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise VizError(f"cannot read the direction file {text[:60]!r}: {str(exc)[:60]}") from None
        if vec.dtype.kind not in "fiu":
            raise VizError(f"the direction file {text[:60]!r} holds no numbers")
        return as_direction(vec.astype(np.float64), lay.channels)
    if not text or len(text) > 4000:
        raise VizError("give a direction: a .npy file or channel weights like 104:0.7,25:0.3")
    vec, seen = np.zeros(lay.channels), set()
    for part in text.split(","):
        ch, colon, w = part.partition(":")
        if not colon:
            raise VizError(f"cannot read the direction {text[:40]!r}: write it like 104:0.7,25:0.3 or give a .npy file")
        c = parse_channel(lay, ch.strip())
        try:
            weight = float(w.strip())
        except ValueError:
            raise VizError(f"the weight of channel {c} must be a number, got {w.strip()[:20]!r}") from None
        if c in seen:
            raise VizError(f"the direction names channel {c} twice")
        seen.add(c)
        vec[c] = weight
    return as_direction(vec, lay.channels)
