"""Views: the ways to look at a channel, each an objective built from :mod:`viz.engine.objectives`.

A view is written as one canonical string, stored in :class:`~viz.engine.settings.RenderSettings` (so the result cache and
the gallery keep views apart) and parsed back with :func:`parse_view`:

- ``channel``: the channel's mean (the method's own objective);
- ``neuron(x=0.5,y=0.5)``: the channel at one position, in fractions of the map;
- ``negative``: what the channel hates (minus its mean);
- ``diversity(n=4,w=1)``: ``n`` different images of the channel, pushed apart by Lucid's Gram-matrix diversity at a
  lower layer;
- ``mix(104+0.5*25)``: a weighted sum of channels, filed under its first; ``mix(104~25,n=5)``: ``n`` images
  interpolating from one channel to another, each filed (and measured) under the channel it leans to (the
  midpoint under the first);
- ``accent(<photo digest>,w=1)``: start from a photo and stay close to it while the channel grows (feature
  accentuation, Hamblin et al. 2024; Microscope's caricatures); ``accent(<photo>,w=1,dir=<digest>)`` grows a
  direction instead of the channel (a group of :mod:`viz.atlas.factors`);
- ``direction(<digest>)``: Lucid's ``direction``, the dot product of the activation at every position with a
  vector over all the layer's channels; ``direction(<digest>,cos=1)`` its cosine-weighted variant. The vector
  travels beside the settings (like the accent view's photo); its digest names it, and the render is filed under
  its strongest channel.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import torch

from ..base.errors import VizError
from ..base.images import png_bytes, thumbnail
from .layers import LAYER_NAMES, get_layer, parse_channel
from .objectives import (
    DIGEST_CHARS,
    Objective,
    as_direction,
    channel,
    direction,
    direction_cossim,
    direction_digest,
    diversity,
    merge_reads,
    neuron,
    stay_close,
)
from .probe import Activations

KINDS = ("channel", "neuron", "negative", "diversity", "mix", "accent", "direction")
MAX_COUNT = 16
_TERM = re.compile(r"\s*([+-]?)\s*(?:([0-9]{1,6}(?:\.[0-9]{1,6})?)\s*\*\s*)?([0-9]{1,4})\s*")
_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,6}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})")  # ASCII digits only ('٣' is not 3)
MAX_TERMS = 16


@dataclass(frozen=True)
class View:
    kind: str = "channel"
    count: int = 1  # images per channel (diversity, interpolation)
    x: float = 0.5
    y: float = 0.5
    terms: tuple[tuple[int, float], ...] = ()  # mix: (channel, weight)
    to: int | None = None  # mix interpolation: from terms[0] to this channel
    start: str = ""  # accent: the start photo's digest
    weight: float = 1.0  # diversity / accent: the extra term's weight, relative to the channel's own scale
    direction: str = ""  # direction / accent: the direction's digest (viz.engine.objectives.direction_digest)
    cos: float = 0.0  # direction: the cosine power (0: the plain dot product)

    def describe(self) -> str:
        k = self.kind
        if k in ("channel", "negative"):
            return k
        if k == "neuron":
            return f"neuron(x={self.x:g},y={self.y:g})"
        if k == "diversity":
            return f"diversity(n={self.count},w={self.weight:g})"
        if k == "mix":
            if self.to is not None:
                return f"mix({self.terms[0][0]}~{self.to},n={self.count})"
            body = "+".join(f"{w:g}*{c}" if w != 1 else str(c) for c, w in self.terms).replace("+-", "-")
            return f"mix({body})"
        if k == "direction":
            return f"direction({self.direction}" + (f",cos={self.cos:g})" if self.cos else ")")
        return f"accent({self.start},w={self.weight:g}" + (f",dir={self.direction})" if self.direction else ")")

    @property
    def primary(self) -> int | None:
        """The channel a mix's request is made for (its first term); an interpolation's images lean to either end."""
        return self.terms[0][0] if self.terms else None

    def images_per_channel(self) -> int:
        return self.count if self.kind in ("diversity", "mix") else 1


def parse_mix(text: str, layer: str) -> tuple[tuple[tuple[int, float], ...], int | None]:
    """``104+0.5*25-3`` -> ((104, 1), (25, 0.5), (3, -1)); ``104~25`` -> ((104, 1),), 25."""
    lay = get_layer(layer)
    text = str(text).strip()
    if "~" in text:
        a, _, b = text.partition("~")
        first, last = parse_channel(lay, a.strip()), parse_channel(lay, b.strip())
        if first == last:
            raise VizError("an interpolation goes from one channel to another: A~B with A and B different")
        return ((first, 1.0),), last
    terms, pos = [], 0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if not m or m.end() == pos or (terms and not m.group(1)):
            raise VizError(f"cannot read the mix {text[:40]!r}: write it like 104+0.5*25 or 104~25")
        sign = -1.0 if m.group(1) == "-" else 1.0
        w = sign * float(m.group(2) or 1)
        if not 1e-3 <= abs(w) <= 1e3:
            raise VizError(f"each weight of a mix must be between 0.001 and 1000 in size, got {w:g}")
        terms.append((parse_channel(lay, m.group(3)), float(f"{w:.6g}")))
        pos = m.end()
        if len(terms) > MAX_TERMS:
            raise VizError(f"a mix has at most {MAX_TERMS} channels")
    if not terms:
        raise VizError("give a mix of channels, like 104+0.5*25")
    if len({c for c, _ in terms}) < len(terms):
        raise VizError("a mix names each channel once")
    return tuple(terms), None


def parse_view(text: str, layer: str) -> View:
    """The canonical string (or a bare kind name) -> :class:`View`; one line on anything else."""
    text = str(text).strip()
    m = re.fullmatch(r"([a-z]+)(?:\((.*)\))?", text)
    if not m or m.group(1) not in KINDS:
        raise VizError(f"unknown view {text[:30]!r}: choose {', '.join(KINDS)}")
    kind, body = m.group(1), m.group(2) or ""
    args: dict[str, str] = {}
    heads = []
    for part in [p for p in body.split(",") if p.strip()]:
        k, eq, v = part.partition("=")
        if not eq:
            heads.append(part.strip())
        elif k.strip() in args:
            raise VizError(f"the view {text[:40]!r} names {k.strip()!r} twice")
        else:
            args[k.strip()] = v.strip()
    allowed = {"neuron": {"x", "y"}, "diversity": {"n", "w"}, "mix": {"n"}, "accent": {"w", "dir"},
               "direction": {"cos"}}.get(kind, set())
    positional = 1 if kind in ("mix", "accent", "direction") else 0
    if set(args) - allowed or len(heads) > positional or (m.group(2) is not None and kind in ("channel", "negative")):
        raise VizError(f"cannot read the view {text[:40]!r}")
    head = heads[0] if heads else ""
    try:
        if kind == "neuron":
            return make_view(kind, layer, x=args.get("x", 0.5), y=args.get("y", 0.5))
        if kind == "diversity":
            return make_view(kind, layer, count=args.get("n", 4), weight=args.get("w", 1.0))
        if kind == "mix":
            return make_view(kind, layer, mix=head, count=args.get("n", 1))
        if kind == "accent":
            return make_view(kind, layer, start=head, weight=args.get("w", 1.0), direction=args.get("dir", ""))
        if kind == "direction":
            return make_view(kind, layer, direction=head, cos=args.get("cos"))
    except VizError:
        raise
    except ValueError:
        raise VizError(f"cannot read the view {text[:40]!r}") from None
    return View(kind)


def _text(v) -> str:
    """A user's number as text: numbers from widgets are written with 6 significant digits."""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).strip()


def _frac(name: str, v) -> float:
    text = _text(v)
    if not _NUMBER.fullmatch(text):
        raise VizError(f"{name} must be a number between 0 and 1, got {text[:20]!r}")
    f = float(f"{float(text):.6g}") + 0.0  # + 0.0: -0 is 0
    if not 0.0 <= f <= 1.0:
        raise VizError(f"{name} must be between 0 and 1 (a fraction of the map), got {f:g}")
    return f


def make_view(kind: str, layer: str, count=None, x=None, y=None, mix=None, start: str = "",
              weight=None, direction: str = "", cos=None) -> View:
    """Validate a view's options; one line on a bad combination. ``direction`` is a direction's digest
    (:func:`direction_digest`); ``cos`` the direction view's cosine power (0-8, 0: the plain dot product)."""
    if kind not in KINDS:
        raise VizError(f"unknown view {str(kind)[:20]!r}: choose {', '.join(KINDS)}")
    if count is not None and not re.fullmatch(r"\+?[0-9]{1,3}", _text(count)):
        raise VizError(f"count must be a whole number, got {_text(count)[:20]!r}")
    if weight is not None and not _NUMBER.fullmatch(_text(weight)):
        raise VizError(f"weight must be a number like 1 or 0.5, got {_text(weight)[:20]!r}")
    n = 1 if count is None else int(_text(count))
    w = 1.0 if weight is None else float(f"{float(_text(weight)):.6g}")
    if weight is not None and kind not in ("diversity", "accent"):
        raise VizError(f"--weight is for the diversity and accent views, not {kind}")
    if kind not in ("diversity", "mix") and n != 1:
        raise VizError(f"--count is for the diversity view and interpolating mixes, not {kind}")
    if (x is not None or y is not None) and kind != "neuron" and (x, y) != (0.5, 0.5):
        raise VizError("--x and --y are for the neuron view")
    if mix is not None and kind != "mix" and str(mix).strip():
        raise VizError("a channel mix like 104+0.5*25 needs the mix view")
    if start and kind != "accent":
        raise VizError("a start photo is for the accent view")
    if direction and kind not in ("direction", "accent"):
        raise VizError(f"a direction is for the direction and accent views, not {kind}")
    if cos is not None and kind != "direction" and _text(cos) not in ("0", "0.0"):
        raise VizError("a cosine power is for the direction view")
    if direction and not re.fullmatch(f"[0-9a-f]{{{DIGEST_CHARS}}}", str(direction)):
        raise VizError("a direction is named by its digest: give the vector (--direction FILE.npy or 104:0.7,25:0.3)")
    if not 1e-3 <= w <= 1e3:
        raise VizError(f"weight must be between 0.001 and 1000, got {w:g}")
    if kind == "neuron":
        return View(kind, x=_frac("x", 0.5 if x is None else x), y=_frac("y", 0.5 if y is None else y))
    if kind == "diversity":
        n = 4 if count is None else n
        if not 2 <= n <= MAX_COUNT:
            raise VizError(f"diversity needs between 2 and {MAX_COUNT} images, got {n}")
        return View(kind, count=n, weight=w)
    if kind == "mix":
        terms, to = parse_mix(mix or "", layer)
        if to is None and n != 1:
            raise VizError("--count N with a mix interpolates: write the channels as A~B")
        if to is not None and not 2 <= n <= MAX_COUNT:
            raise VizError(f"an interpolation needs between 2 and {MAX_COUNT} images (--count), got {n}")
        return View(kind, count=n, terms=terms, to=to)
    if kind == "accent":
        if not re.fullmatch(r"[0-9a-f]{8,64}", start or ""):
            raise VizError("the accent view starts from a photo: give one (--start PHOTO)")
        return View(kind, start=start, weight=w, direction=direction)
    if kind == "direction":
        if not direction:
            raise VizError("the direction view needs a direction (--direction FILE.npy or 104:0.7,25:0.3)")
        if cos is not None and not _NUMBER.fullmatch(_text(cos)):
            raise VizError(f"the cosine power must be a number like 0 or 1, got {_text(cos)[:20]!r}")
        p = 0.0 if cos is None else float(f"{float(_text(cos)):.6g}") + 0.0
        if not 0 <= p <= 8:
            raise VizError(f"the cosine power must be between 0 and 8, got {p:g}")
        return View(kind, direction=direction, cos=p)
    return View(kind)


def photo_digest(image) -> str:
    """A short digest of a photo's pixels (H, W, 3) uint8: how the accent view names its start."""
    arr = np.ascontiguousarray(image, dtype=np.uint8)
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()[:16]


# accent(w=1): the pixel distance to the photo weighs this much against the channel's own scale; measured at conv4_1
# with the default recipe, the image then stays within about a tenth of the pixel range of its photo on average
# while the channel grows from the photo's activation to most of a free render's.
ACCENT_SCALE = 30.0
START_SIDE = 512  # the accent view's photo is kept at most this large (the render resizes it to its own size)


def start_photo(image) -> tuple:
    """A photo made ready for the accent view: (pixels at most ``START_SIDE`` px, digest, PNG bytes)."""
    small = thumbnail(image, START_SIDE)
    return small, photo_digest(small), png_bytes(small)


LABELS = {  # for people: what each view shows
    "channel": "the channel (its mean)",
    "neuron": "one neuron (one position)",
    "negative": "negative (what it hates)",
    "diversity": "diversity (several different images)",
    "mix": "mix of channels",
    "accent": "accentuate a photo",
    "direction": "a direction (channels combined)",
}


CURVE_WORDS = {  # what a view's optimization curve measures, in the units of its numbers
    "channel": ("channel activation (mean)", True),
    "neuron": ("the neuron's activation (one position)", False),
    "negative": ("minus the channel's mean activation", False),
    "diversity": ("channel mean + diversity term", False),
    "mix": ("the mix: weighted channel means", False),
    "accent": ("channel mean + closeness to the photo", False),
    "direction": ("the direction's value", False),
}


def curve_words(view: str) -> tuple[str, bool]:
    """For a view's description (``negative``, ``neuron(x=0.5,y=0.5)``, …): the label of its objective curve,
    and whether the curve is in the channel's own units (so that the best photo's response belongs beside it)."""
    return CURVE_WORDS.get(str(view).split("(", 1)[0], ("objective", False))


def diversity_layer(layer: str) -> str:
    """Where the diversity term compares images: a few convs below the target (Lucid: a lower layer)."""
    i = LAYER_NAMES.index(get_layer(layer).name)
    return LAYER_NAMES[max(0, i - 3)]


def _relative(base: Objective, extra: Objective, w: float, description: str) -> Objective:
    """``base + w * s * extra`` where ``s`` is the size of base's value (detached, at least 1): the extra term
    weighs the same against any channel, whatever its activation scale."""

    def fn(acts):
        b = base(acts)
        return b + w * b.detach().abs().clamp(min=1.0) * extra(acts)

    return Objective(fn, description, merge_reads(base.reads, extra.reads), report=base)


def view_objective(view: View, layer: str, channels: list[int], base: Objective,
                   start: torch.Tensor | None = None, vector=None) -> tuple[Objective, list[int]]:
    """The objective of ``view`` for ``channels`` (one image per channel and per view image) and the channel
    each image is filed under. ``base`` is the method's own objective for the per-image channels (the
    ``channel`` view); ``vector`` the direction the view's digest names (direction, accent with ``dir``)."""
    per = view.images_per_channel()
    chans = [c for c in channels for _ in range(per)]
    if view.kind == "channel":
        return base, chans
    toward = None
    if view.direction:
        toward = direction_objective(view, layer, vector)
        if view.kind == "direction":
            return toward, chans
    if view.kind == "negative":
        return -channel(layer, chans), chans
    if view.kind == "neuron":
        return neuron(layer, chans, x=view.x, y=view.y), chans
    if view.kind == "diversity":
        groups = torch.tensor([i // per for i in range(len(chans))])
        div = diversity(diversity_layer(layer))
        grouped = Objective(lambda a: _within(div, a, groups), f"{div.description} within each channel", div.reads)
        return _relative(channel(layer, chans), grouped, view.weight,
                         f"channel + {view.weight:g} * {grouped.description}"), chans
    if view.kind == "mix":
        if view.to is not None:
            t = torch.tensor([k / (per - 1) for _ in channels for k in range(per)])
            a, b = view.terms[0][0], view.to
            return (1 - t) * channel(layer, a) + t * channel(layer, b), [a if w <= 0.5 else b for w in t.tolist()]
        terms = [channel(layer, c) if w == 1 else w * channel(layer, c) for c, w in view.terms]
        return Objective.sum(terms), [view.terms[0][0]] * len(chans)
    if start is None:
        raise VizError("the accent view needs its start photo")
    close = stay_close(start, view.start)
    grow = channel(layer, chans) if toward is None else toward
    return _relative(grow, close, view.weight * ACCENT_SCALE,
                     f"{'channel' if toward is None else toward.description} + {view.weight:g} * "
                     f"{close.description}"), chans


def direction_objective(view: View, layer: str, vector) -> Objective:
    """The direction the view names, checked against the vector given beside it."""
    if vector is None:
        raise VizError("the view needs its direction vector (--direction FILE.npy or 104:0.7,25:0.3)")
    v = as_direction(vector, get_layer(layer).channels)
    if direction_digest(v) != view.direction:
        raise VizError("the direction given is not the one the view's settings name")
    return direction_cossim(layer, v, view.cos) if view.cos else direction(layer, v)


def top_channel(vector) -> int:
    """The channel a direction is filed under: its largest weight."""
    return int(np.argmax(np.asarray(vector, dtype=np.float64)))


def _within(div: Objective, acts, groups: torch.Tensor) -> torch.Tensor:
    """The diversity term computed separately for each group of images (one group per channel)."""
    out = torch.zeros(len(groups), device=acts.device)
    for g in groups.unique().tolist():
        idx = (groups == g).nonzero().flatten().to(acts.device)
        sub = Activations({k: v[idx] for k, v in acts.maps.items()}, acts.index, acts.image[idx])
        out = out.index_put((idx,), div(sub))
    return out
