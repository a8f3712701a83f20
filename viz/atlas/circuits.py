"""Circuits: what a channel is built from in the conv layer below, and what it feeds in the conv layer above.

VGG16 has no branches and its max-pools never mix channels, so the connection between channel ``i`` of one conv
layer and channel ``o`` of the next is exactly one 3x3 kernel, ``W[o, i]`` (Olah et al. 2020, "Zoom In"). Two
measures rank the connections, and every ranking names its measure:

- **weight**: the kernel's sum (excitatory when positive, inhibitory when negative), its L2 norm alongside;
- **contribution**: at the channel's strongest positions in the bundled photos, the share of its pre-activation
  that each input channel supplies (the input's post-ReLU 3x3 window, after the pool where there is one, times
  the kernel), averaged over those positions: what drives the channel on real photos, not only what the weights
  allow. The photos are read once per weights into a :class:`ContributionTable` (committed for ``oxford``).

At depth 2 (weight only) the kernels are **expanded**: the linear path through both kernels, the ReLU set aside and
the max-pool taken as the average of its 2x2 window (Captum's ``extract_expanded_weights``; Olah et al. 2020,
"Visualizing Weights"), 5x5 kernels, or wider across a pool. conv1_1's inputs are the three colour planes of the
photo, with the input normalization folded into its kernels.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..base.corpus import Corpus, bundled, iter_images
from ..base.errors import VizError
from ..base.files import COMMITTED_GALLERY, atomic_write, safe_name
from ..engine.layers import LAYER_NAMES, LAYERS, get_layer, parse_channel
from ..engine.model import VGGFeatures
from ..engine.weights import cache_dir
from .examples import SCALES, resized

COLOURS = ("red", "green", "blue")
INPUT = "input"  # the "layer" of the colour planes
BY = ("weight", "contribution")
DIRECTIONS = ("in", "out")
TOP = 8  # strongest positions per channel averaged by the contribution measure
MAX_TOP = 64
TABLE_SCHEMA = "vgg16-atlas/contributions"
TABLE_VERSION = 1

MEASURES = {
    ("weight", 1): "kernel sum (the 3x3 weights added up; excitatory > 0, inhibitory < 0)",
    ("weight", 2): "expanded kernel sum (the linear path through two kernels, ReLU set aside, max-pool as a 2x2 "
                   "average)",
    ("contribution", 1): "share of the pre-activation supplied at the channel's {n} strongest positions in the "
                         "bundled photos (mean)",
}


# ------------------------------------------------------------------------------------------------ the layers
def layer_below(layer: str) -> str | None:
    """The conv layer that feeds ``layer`` (None for conv1_1, whose inputs are the colour planes)."""
    i = LAYER_NAMES.index(get_layer(layer).name)
    return LAYER_NAMES[i - 1] if i else None


def layer_above(layer: str) -> str | None:
    """The conv layer that ``layer`` feeds (None for conv5_3, the last)."""
    i = LAYER_NAMES.index(get_layer(layer).name)
    return LAYER_NAMES[i + 1] if i + 1 < len(LAYER_NAMES) else None


def pooled_before(layer: str) -> bool:
    """Whether a 2x2 max-pool sits between ``layer`` and the conv layer below it (the first conv of blocks 2-5)."""
    lay = get_layer(layer)
    return lay.block > 1 and lay.name.endswith("_1")


def kernels(model: VGGFeatures, layer: str) -> torch.Tensor:
    """``layer``'s weights (out, in, 3, 3), float32 on the CPU. For conv1_1 the input normalization is folded in,
    so that its inputs are the photo's red, green and blue in [0, 1] (in that order)."""
    lay = get_layer(layer)
    w = model.features[lay.index].weight.detach().float().cpu()
    if lay.name != LAYER_NAMES[0]:
        return w
    norm = model.normalize
    per_input = w * (norm.scale / norm.std.detach().float().cpu().view(1, 3, 1, 1))
    rgb = torch.zeros_like(per_input)
    for j, c in enumerate(norm.order):  # normalized input j reads pixel colour c
        rgb[:, c] += per_input[:, j]
    return rgb


def channel_name(layer: str, channel: int) -> str:
    return COLOURS[channel] if layer == INPUT else f"{layer}:{channel}"


# -------------------------------------------------------------------------------------------------- rankings
def rank(strength: torch.Tensor | np.ndarray, top: int) -> tuple[list[int], list[int]]:
    """Indices of the ``top`` largest positive strengths (descending) and of the ``top`` most negative
    (ascending); zero and NaN are neither."""
    s = torch.as_tensor(np.asarray(strength, dtype=np.float64))
    order = torch.argsort(s, descending=True, stable=True).tolist()
    excite = [i for i in order if s[i] > 0][:top]
    inhibit = [i for i in reversed(order) if s[i] < 0][:top]
    return excite, inhibit


def peak_shares(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every output channel of a 3x3 conv (stride 1, padding 1): its strongest position in ``y``, the value
    there and the share of that value each input channel supplies.

    ``x``: the conv's input (in, H, W); ``y``: its pre-activation output (out, H, W); ``w``: its weights
    (out, in, 3, 3). Returns values (out,), positions (out, 2) as (row, column) and shares (out, in): the input's
    3x3 window times the kernel, over the value (the bias supplies the rest)."""
    cout, h, wd = y.shape
    values, flat = y.reshape(cout, -1).max(dim=1)
    rows, cols = flat // wd, flat % wd
    xp = F.pad(x, (1, 1, 1, 1))
    offs = torch.arange(3)
    windows = xp[:, (rows[:, None] + offs)[:, :, None], (cols[:, None] + offs)[:, None, :]]  # (in, out, 3, 3)
    contrib = torch.einsum("iokl,oikl->oi", windows, w)
    return values, torch.stack([rows, cols], 1), contrib / values[:, None]


def expanded(k2: torch.Tensor, k1: torch.Tensor, pool_between: bool = False,
             pool_below: bool = False) -> torch.Tensor:
    """Expanded weights of two stacked 3x3 convs (stride 1, padding 1): the linear map from the lower conv's
    input to the upper conv's output at one position, (out of ``k2``, in of ``k1``, S, S), the ReLU set aside and
    a max-pool taken as its 2x2 average (as Captum's ``extract_expanded_weights``). ``pool_between``: a pool
    between the two convs (S = 8); ``pool_below``: a pool before the lower conv (S = 10); neither: S = 5.

    Tap ``a`` of the upper kernel and tap ``b`` of the lower one meet at input offset ``sa * a + sb * b + e``,
    where ``sa``, ``sb`` are the input pixels per step of each kernel's grid and ``e`` runs over a pool's window."""
    sa, sb = (2 if pool_between or pool_below else 1), (2 if pool_below else 1)
    pool = pool_between or pool_below
    window = (0, 1) if pool else (0,)
    side = 2 * sa + 2 * sb + len(window)
    n_out, n_in = k2.shape[0], k1.shape[1]
    pairs = torch.einsum("oia,ikb->okab", k2.double().flatten(2), k1.double().flatten(2))  # (out, in, 9, 9)
    if pool:
        pairs = pairs / 4
    out = torch.zeros(n_out, n_in, side * side, dtype=torch.float64)
    taps = torch.arange(9)
    ay, ax, by, bx = taps[:, None] // 3, taps[:, None] % 3, taps[None] // 3, taps[None] % 3
    for ey in window:
        for ex in window:
            place = (sa * ay + sb * by + ey) * side + (sa * ax + sb * bx + ex)  # (9, 9)
            out.index_add_(2, place.flatten(), pairs.flatten(2))
    return out.view(n_out, n_in, side, side).float()


# ------------------------------------------------------------------------------------- the contribution table
@dataclass
class ContributionTable:
    """Per conv layer, per output channel: the mean share each input channel supplies at the channel's ``top``
    strongest positions in the bundled photos (the strongest position of each photo at each scale, the ``top``
    strongest of those), with the number of positions averaged (positions with a non-positive value are left out:
    a share of a negative sum means nothing)."""

    weights_sha256: str
    corpus: str
    top: int
    shares: dict[str, np.ndarray]  # layer -> (out, in) float32
    counts: dict[str, np.ndarray]  # layer -> (out,) int
    where: dict[str, list] = field(default_factory=dict)  # layer -> per channel [[image, scale, row, col, value]]

    def to_bytes(self) -> bytes:
        meta = {"schema": TABLE_SCHEMA, "version": TABLE_VERSION, "weights_sha256": self.weights_sha256,
                "corpus": self.corpus, "top": self.top, "scales": list(SCALES), "where": self.where}
        arrays = {f"{n}.share": a.astype(np.float16) for n, a in self.shares.items()}
        arrays.update({f"{n}.count": a.astype(np.int16) for n, a in self.counts.items()})
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> "ContributionTable":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("schema") != TABLE_SCHEMA or meta.get("version") != TABLE_VERSION:
                    raise ValueError("another schema or version")
                shares = {n: z[f"{n}.share"].astype(np.float32) for n in LAYER_NAMES}
                counts = {n: z[f"{n}.count"].astype(np.int64) for n in LAYER_NAMES}
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise VizError(f"the contribution table {path.name} is unreadable ({type(exc).__name__})") from None
        for n in LAYER_NAMES:
            lay = LAYERS[n]
            if shares[n].shape != (lay.channels, lay.in_channels) or counts[n].shape != (lay.channels,):
                raise VizError(f"the contribution table {path.name} does not fit VGG16 ({n})")
        return cls(meta["weights_sha256"], meta["corpus"], int(meta["top"]), shares, counts, meta.get("where", {}))


def measure_contributions(model: VGGFeatures, corpus: Corpus | None = None, top: int = TOP,
                          progress: Callable[[int, int], None] | None = None) -> ContributionTable:
    """Read the photos of ``corpus`` (default: the bundled ones) at every scale of the dataset examples, one
    image at a time (memory: one image's maps), and build the :class:`ContributionTable`."""
    corpus = corpus or bundled()
    convs = {LAYERS[n].index: n for n in LAYER_NAMES}
    w = {n: kernels(model, n) for n in LAYER_NAMES}
    best = {n: torch.full((LAYERS[n].channels, top), -torch.inf) for n in LAYER_NAMES}
    shares = {n: torch.zeros(LAYERS[n].channels, top, LAYERS[n].in_channels) for n in LAYER_NAMES}
    where = {n: torch.full((LAYERS[n].channels, top, 4), -1, dtype=torch.long) for n in LAYER_NAMES}
    names = list(corpus.images)
    total = len(names) * len(SCALES)
    done = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for index, name, image, _why in iter_images(corpus):
            if image is None:
                continue
            for s, short in enumerate(SCALES):
                x, _ = resized(image, short)
                t = x.to(device)
                inp = x[0].float()  # conv1_1 reads the colour planes (its kernels have the normalization in them)
                t = model.normalize(t)
                for i, module in enumerate(model.features[: LAYERS[LAYER_NAMES[-1]].index + 1]):
                    if i in convs:
                        n = convs[i]
                        if i:
                            inp = t[0].float().cpu().clone()
                        t = module(t)
                        y = t[0].float().cpu()  # read before the in-place ReLU that follows
                        values, pos, sh = peak_shares(inp, y, w[n])
                        merged = torch.cat([best[n], values[:, None]], 1)
                        keep = merged.topk(top, dim=1).indices
                        best[n] = merged.gather(1, keep)
                        cand = torch.cat([shares[n], sh[:, None]], 1)
                        shares[n] = cand.gather(1, keep[:, :, None].expand(-1, -1, cand.shape[2]))
                        loc = torch.cat([torch.full_like(pos[:, :1], index), torch.full_like(pos[:, :1], s), pos], 1)
                        wc = torch.cat([where[n], loc[:, None]], 1)
                        where[n] = wc.gather(1, keep[:, :, None].expand(-1, -1, 4))
                    else:
                        t = module(t)
                done += 1
                if progress:
                    progress(done, total)
    table_shares, counts, places = {}, {}, {}
    for n in LAYER_NAMES:
        ok = (best[n] > 0) & torch.isfinite(best[n])
        counts[n] = ok.sum(1).numpy()
        summed = (shares[n] * ok[:, :, None]).sum(1)
        table_shares[n] = (summed / ok.sum(1, keepdim=True).clamp(min=1)).numpy().astype(np.float32)
        places[n] = [[[names[int(i)], SCALES[int(s)], int(r), int(c), round(float(v), 4)]
                      for (i, s, r, c), v, good in zip(where[n][o].tolist(), best[n][o].tolist(), ok[o].tolist())
                      if good] for o in range(LAYERS[n].channels)]
    return ContributionTable(model.weights.sha256, corpus.name, top, table_shares, counts, places)


def committed_table(weights: str) -> Path:
    return COMMITTED_GALLERY / safe_name(weights) / "circuits" / "contributions.npz"


def cached_table(weights: str) -> Path:
    return cache_dir() / "circuits" / safe_name(weights) / "contributions.npz"


_tables: dict[str, ContributionTable] = {}
_tables_lock = threading.Lock()


def contribution_table(model: VGGFeatures, progress: Callable[[int, int], None] | None = None,
                       notice: Callable[[str], None] | None = None) -> ContributionTable:
    """The table for ``model``'s weights: read from the committed or cached file when its weights hash matches,
    else measured once (22 forward passes, about 20 s on 2 cores) and cached. Once per process and weights."""
    sha = model.weights.sha256
    with _tables_lock:
        if sha in _tables:
            return _tables[sha]
        for path in (committed_table(model.weights_name), cached_table(model.weights_name)):
            if path.is_file():
                try:
                    table = ContributionTable.from_file(path)
                except VizError:
                    continue
                if table.weights_sha256 == sha:
                    _tables[sha] = table
                    return table
        if notice:
            notice(f"reading the bundled photos once for the contribution measure (weights {model.weights_name})")
        table = measure_contributions(model, progress=progress)
        path = cached_table(model.weights_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, table.to_bytes())
        _tables[sha] = table
        return table


def table_ready(model: VGGFeatures) -> bool:
    """Whether :func:`contribution_table` answers without reading the photos."""
    return model.weights.sha256 in _tables or any(p.is_file() for p in (committed_table(model.weights_name),
                                                                       cached_table(model.weights_name)))


# ------------------------------------------------------------------------------------------------- a circuit
@dataclass
class Link:
    """One connection: the other channel, the measure's value and the kernel that carries it."""

    layer: str  # the other channel's layer ("input" for the colour planes)
    channel: int
    strength: float  # the ranking's measure
    weight_sum: float
    weight_norm: float
    kernel: np.ndarray  # (k, k): 3x3, or expanded
    share: float | None = None  # the contribution measure's value, where it was asked for

    @property
    def name(self) -> str:
        return channel_name(self.layer, self.channel)

    def to_json(self) -> dict:
        out = {"layer": self.layer, "channel": self.channel, "name": self.name, "strength": round(self.strength, 6),
               "weight_sum": round(self.weight_sum, 6), "weight_norm": round(self.weight_norm, 6),
               "kernel": np.round(self.kernel.astype(np.float64), 6).tolist()}
        if self.share is not None:
            out["share"] = round(self.share, 6)
        return out


@dataclass
class Circuit:
    layer: str
    channel: int
    direction: str  # "in": what builds it; "out": what it feeds
    by: str
    depth: int
    other: str  # the layer at the far end of the links
    measure: str
    excite: list[Link]
    inhibit: list[Link]
    positions: int | None = None  # contribution: the positions averaged (for "in"; per link for "out")

    def to_json(self) -> dict:
        return {"layer": self.layer, "channel": self.channel, "direction": self.direction, "by": self.by,
                "depth": self.depth, "other_layer": self.other, "measure": self.measure,
                "positions": self.positions, "excite": [lk.to_json() for lk in self.excite],
                "inhibit": [lk.to_json() for lk in self.inhibit]}


def _check(layer: object, channel: object, direction: object, by: object, depth: object, top: object):
    lay = get_layer(layer)
    ch = parse_channel(lay, channel)
    if direction not in DIRECTIONS:
        raise VizError(f"direction must be in (what builds the channel) or out (what it feeds), got {direction!r}")
    if by not in BY:
        raise VizError(f"the measure must be weight or contribution, got {str(by)[:20]!r}")
    try:
        depth = int(depth)
    except (TypeError, ValueError):
        raise VizError(f"depth must be 1 or 2, got {str(depth)[:20]!r}") from None
    if depth not in (1, 2):
        raise VizError(f"depth must be 1 or 2, got {depth}")
    try:
        top = int(top)
    except (TypeError, ValueError):
        raise VizError(f"top must be a whole number from 1 to {MAX_TOP}, got {str(top)[:20]!r}") from None
    if not 1 <= top <= MAX_TOP:
        raise VizError(f"top must be from 1 to {MAX_TOP}, got {top}")
    if depth == 2 and by == "contribution":
        raise VizError("the contribution measure goes one level at a time: use depth 1, or the weight measure "
                       "for expanded weights two levels away")
    return lay.name, ch, depth, top


def _far(layer: str, direction: str, depth: int) -> str:
    """The layer ``depth`` conv layers below (in) or above (out) ``layer`` (``input`` below conv1_1), or a
    one-line refusal."""
    here = layer
    for level in range(depth):
        if here == INPUT:
            raise VizError(f"{layer} is {level} level{'s' * (level > 1)} above the photo: there is nothing "
                           f"{depth} levels below it")
        nxt = layer_below(here) if direction == "in" else layer_above(here)
        if nxt is None and direction == "out":
            raise VizError(f"{layer} feeds no conv layer {depth} level{'s' * (depth > 1)} up (conv5_3 is the last)")
        here = INPUT if nxt is None else nxt
    return here


def circuit(model: VGGFeatures, layer: str, channel: int, direction: str = "in", by: str = "weight",
            depth: int = 1, top: int = TOP, progress: Callable[[int, int], None] | None = None,
            notice: Callable[[str], None] | None = None) -> Circuit:
    """What builds ``layer``:``channel`` (``direction="in"``) or what it feeds (``"out"``), ranked ``by`` weight or
    contribution, one or two conv layers away: the ``top`` strongest excitatory and inhibitory links."""
    layer, channel, depth, top = _check(layer, channel, direction, by, depth, top)
    other = _far(layer, direction, depth)
    positions = None
    if depth == 1:
        upper = layer if direction == "in" else layer_above(layer)
        w = kernels(model, upper)
        k = w[channel] if direction == "in" else w[:, channel]  # (n, 3, 3)
        sums, norms = k.sum((1, 2)), k.flatten(1).norm(dim=1)
        share = None
        if by == "weight":
            strength = sums
        else:
            table = contribution_table(model, progress=progress, notice=notice)
            share = torch.from_numpy(table.shares[upper][channel] if direction == "in"
                                     else table.shares[upper][:, channel].copy())
            if direction == "in":
                positions = int(table.counts[upper][channel])
                if positions == 0:
                    raise VizError(f"{layer}:{channel} is never positive in the bundled photos: the contribution "
                                   "measure has nothing to average; use the weight measure")
            else:  # next-layer channels that never fire on the photos have no shares to rank
                share = torch.where(torch.from_numpy(table.counts[upper] > 0), share, torch.zeros_like(share))
            strength = share
        measure = MEASURES[(by, 1)].format(n=table.top if by == "contribution" else TOP)
    else:
        upper = layer if direction == "in" else layer_above(layer_above(layer))
        mid = layer_below(upper)
        k2, k1 = kernels(model, upper), kernels(model, mid)
        if direction == "in":
            k = expanded(k2[channel:channel + 1], k1, pooled_before(upper), pooled_before(mid))[0]
        else:
            k = expanded(k2, k1[:, channel:channel + 1], pooled_before(upper), pooled_before(mid))[:, 0]
        sums, norms = k.sum((1, 2)), k.flatten(1).norm(dim=1)
        strength, share = sums, None
        measure = MEASURES[("weight", 2)]
    excite, inhibit = rank(strength, top)

    def link(i: int) -> Link:
        return Link(other, i, float(strength[i]), float(sums[i]), float(norms[i]), k[i].numpy(),
                    None if share is None else float(share[i]))

    return Circuit(layer, channel, direction, by, depth, other, measure, [link(i) for i in excite],
                   [link(i) for i in inhibit], positions)


# ---------------------------------------------------------------------------------------------- a neighbourhood
@dataclass(frozen=True)
class Node:
    layer: str
    channel: int
    level: int  # 0: the centre; -1, -2: below; 1: above


@dataclass(frozen=True)
class Edge:
    source: Node  # the lower end
    target: Node  # the upper end
    strength: float


def neighbourhood(model: VGGFeatures, layer: str, channel: int, by: str = "weight", below: int = 2,
                  above: int = 1, fan: int = 4, notice: Callable[[str], None] | None = None
                  ) -> tuple[list[Node], list[Edge]]:
    """A channel with ``below`` levels of what builds it and ``above`` levels of what it feeds: at each step the
    ``fan`` links of largest magnitude (both signs) by ``by``; nodes shared by two paths appear once."""
    centre = Node(get_layer(layer).name, parse_channel(get_layer(layer), channel), 0)
    nodes, edges = [centre], []
    seen = {(centre.layer, centre.channel): centre}

    def strongest(c: Circuit) -> list[Link]:
        return sorted(c.excite + c.inhibit, key=lambda lk: -abs(lk.strength))[:fan]

    def add(lk: Link, level: int) -> Node:
        key = (lk.layer, lk.channel)
        if key not in seen:
            seen[key] = Node(lk.layer, lk.channel, level)
            nodes.append(seen[key])
        return seen[key]

    frontier = [centre]
    for level in range(1, below + 1):
        nxt = []
        for node in frontier:
            if node.layer == INPUT:
                continue
            c = circuit(model, node.layer, node.channel, "in", by, 1, fan, notice=notice)
            for lk in strongest(c):
                other = add(lk, -level)
                edges.append(Edge(other, node, lk.strength))
                nxt.append(other)
        frontier = nxt
    frontier = [centre]
    for level in range(1, above + 1):
        nxt = []
        for node in frontier:
            if layer_above(node.layer) is None:
                continue
            c = circuit(model, node.layer, node.channel, "out", by, 1, fan, notice=notice)
            for lk in strongest(c):
                other = add(lk, level)
                edges.append(Edge(node, other, lk.strength))
                nxt.append(other)
        frontier = nxt
    return nodes, edges
