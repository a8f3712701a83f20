"""Per-channel running extremes of activation maps: the dataset examples' bookkeeping, apart from the scan.

Maps of one layer (pre-ReLU, ``(C, H, W)`` each) are folded into a :class:`LayerState` a batch at a time: per
channel the ``top`` strongest **peaks** (local maxima: no stronger position of the same map within half a
window, so two examples are never the same spot twice), the ``top`` most negative ones (local minima), the
exact maximum, and a log-scale histogram of a spatial sample for the percentiles. Memory is bounded by the
layer sizes, never by the corpus: small maps wait side by side in one buffer per layer (:class:`Pending`) and
are folded in together, since one search over many maps costs far less than one per map.

Per value a fold costs one copy (a small map into the buffer; a large map is folded where it lies) and one pass
per end (block maxima and minima, :class:`Blocks`). Per channel it searches only the best blocks for candidates,
and tests each candidate against its own neighbourhood in the map, so the search costs the same however the
strong positions cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..engine.layers import get_layer

HIST_BINS = 1024
HIST_LIMIT = math.log1p(1e5)  # activations up to 1e5 in magnitude are binned; beyond, the end bins
HIST_SAMPLE = 256  # positions per channel, image and scale that enter the histogram (a regular spatial sample)

# Maps wait and are folded in together, up to this many values per layer (20 MB; a larger map alone): one search
# over many maps costs far less than one per map. Maps this large are folded in at once, where they lie (a copy
# costs more than batching saves).
PENDING_FLOATS = 5_000_000
ALONE_FLOATS = 2_500_000


def window(layer: str) -> int:
    """Peak-suppression window in map units: peaks are at least half a receptive field apart."""
    lay = get_layer(layer)
    return 2 * max(1, lay.receptive_field // (4 * lay.stride)) + 1


@dataclass
class LayerState:
    """Running results for one layer (tensors of shape (C, top) and (C, HIST_BINS))."""

    channels: int
    top: int
    values: torch.Tensor = field(init=False)
    where: torch.Tensor = field(init=False)  # (C, top, 4): image index, scale index, y, x
    neg_values: torch.Tensor = field(init=False)  # of -activation
    neg_where: torch.Tensor = field(init=False)
    hist: torch.Tensor = field(init=False)
    maximum: torch.Tensor = field(init=False)

    def __post_init__(self):
        c, k = self.channels, self.top
        self.values = torch.full((c, k), -math.inf)
        self.where = torch.full((c, k, 4), -1, dtype=torch.int32)
        self.neg_values = torch.full((c, k), -math.inf)
        self.neg_where = torch.full((c, k, 4), -1, dtype=torch.int32)
        self.hist = torch.zeros((c, HIST_BINS), dtype=torch.int64)
        self.maximum = torch.full((c,), -math.inf)

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("values", "where", "neg_values", "neg_where", "hist", "maximum")}

    def load(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)


def _merge(values, where, cand_v, cand_where, top):
    allv = torch.cat([values, cand_v], dim=1)
    allw = torch.cat([where, cand_where], dim=1)
    v, i = allv.topk(min(top, allv.shape[1]), dim=1)
    return v, torch.gather(allw, 1, i[..., None].expand(-1, -1, 4))


def merge_states(into: LayerState, part: LayerState) -> None:
    """Fold a state of other images (a window scanned elsewhere) into ``into``: the best ``top`` of both lists at
    each end, the larger maximum, the summed histogram."""
    into.maximum = torch.maximum(into.maximum, part.maximum)
    into.hist = into.hist + part.hist
    into.values, into.where = _merge(into.values, into.where, part.values, part.where, into.top)
    into.neg_values, into.neg_where = _merge(into.neg_values, into.neg_where, part.neg_values, part.neg_where,
                                             into.top)


ALIGN = 1024  # a buffer's row length is a multiple of every block size


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class Pending:
    """Maps of one layer waiting to be folded in together, side by side in one reused buffer ``(C, capacity)``:
    each map is copied in once, as it arrives (the network's in-place ReLU overwrites it next). The buffer's rows
    are ``ALIGN``-aligned, so its blocks are rows of one 2-D view and a row's partial last block has room to be
    padded (:class:`Blocks`)."""

    def __init__(self, channels: int, capacity: int):
        self.channels, self.capacity = channels, _aligned(capacity)
        self.buf: torch.Tensor | None = None  # allocated at the first map
        self.used = 0  # values per channel
        self.shapes: list[tuple[int, int]] = []  # (H, W) of each map
        self.keys: list[tuple[int, int]] = []  # (image, scale) of each map

    @classmethod
    def wrap(cls, a: torch.Tensor, image: int, scale: int) -> Pending:
        """One contiguous map (C, H, W) to be folded where it lies, no copy (H * W a multiple of 32, so that its
        blocks need no padding)."""
        c, h, w = a.shape
        p = cls(c, 0)
        p.buf, p.capacity, p.used, p.shapes, p.keys = a.view(c, h * w), h * w, h * w, [(h, w)], [(image, scale)]
        return p

    @property
    def flat(self) -> torch.Tensor:
        """(C, N): the maps' values, map after map."""
        return self.buf[:, :self.used]

    def fits(self, a: torch.Tensor) -> bool:
        return self.used + a.shape[1] * a.shape[2] <= self.capacity

    def add(self, a: torch.Tensor, image: int, scale: int) -> None:
        """Copy the map ``a`` (C, H, W) in; an empty buffer grows for a map larger than it."""
        n = a.shape[1] * a.shape[2]
        if not self.used and n > self.capacity:
            self.capacity, self.buf = _aligned(n), None
        if not self.fits(a):
            raise ValueError("the map does not fit: fold first")
        if self.buf is None:
            self.buf = torch.empty(self.channels, self.capacity, dtype=a.dtype)
        self.buf[:, self.used:self.used + n].copy_(a.flatten(1))
        self.used += n
        self.shapes.append((a.shape[1], a.shape[2]))
        self.keys.append((image, scale))

    def maps(self) -> list[torch.Tensor]:
        """The maps as (C, H, W) views of the buffer."""
        out, start = [], 0
        for h, w in self.shapes:
            out.append(self.buf[:, start:start + h * w].view(-1, h, w))
            start += h * w
        return out

    def clear(self) -> None:
        self.used, self.shapes, self.keys = 0, [], []


FINE = 8  # values per fine block: candidates are the maxima (minima) of fine blocks


class Blocks:
    """The rows of ``p.flat`` (C, N) cut into coarse blocks of ``size`` values (a multiple of :data:`FINE`, at least
    32: torch reduces runs that long about four times faster per value than runs of 8), with every block's
    maximum and minimum (the partial last block padded). The rows' extremes follow from them, and
    :meth:`candidates` reads only a row's ``m`` best coarse blocks: they hold its ``m`` best fine blocks. One
    pass per end serves both the extremes and the search."""

    def __init__(self, p: Pending, m: int):
        c, n = p.channels, p.used
        self.p, self.m = p, min(m, -(-n // FINE))  # never more candidates than fine blocks
        self.size = min(ALIGN, FINE << max(2, round(math.log2(max(1.0, (n / (FINE * self.m)) ** 0.5)))))
        while p.capacity % self.size:  # a wrapped map's rows: a size that divides them
            self.size //= 2
        self.blocks = -(-n // self.size)
        self.padding = None
        view = p.buf[:, :self.blocks * self.size].view(c, self.blocks, self.size)
        self.pad(-math.inf)
        self.high = view.amax(dim=2)  # (torch.aminmax is several times slower)
        self.pad(math.inf)
        self.low = view.amin(dim=2)

    def pad(self, value: float) -> None:
        """Fill the partial last block's room with ``value`` (-inf: it never wins a maximum; inf: a minimum)."""
        end = self.blocks * self.size
        if end > self.p.used and self.padding != value:
            self.p.buf[:, self.p.used:end] = value
            self.padding = value

    def extremes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the maximum and the minimum of all its values."""
        return self.high.amax(dim=1), self.low.amin(dim=1)

    def read(self, rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``flat[rows[:, None], idx]`` for positions ``idx`` (len(rows), k); ``rows`` are sorted and distinct (as
        ``nonzero`` gives them): as many as there are channels means all of them."""
        flat = self.p.flat
        if rows.numel() == flat.shape[0]:
            return torch.gather(flat, 1, idx)
        return flat[rows[:, None], idx]

    def candidates(self, rows: torch.Tensor, largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row of ``rows``: the maxima (``largest``) or minima of its ``m`` strongest fine blocks (:data:`FINE`
        consecutive values), strongest first, and their positions in the row."""
        self.pad(-math.inf if largest else math.inf)
        k, per_fine = rows.numel(), self.size // FINE
        coarse = self.high if largest else self.low
        if k != coarse.shape[0]:
            coarse = coarse[rows]
        if self.blocks > self.m:  # only the m best coarse blocks can hold the m best fine blocks
            coarse = coarse.topk(self.m, dim=1, largest=largest, sorted=False).indices
        else:
            coarse = torch.arange(self.blocks).expand(k, -1)
        # the buffer as one row per block: whole blocks are copied at memory speed (index_select, not gather)
        per_row = self.p.capacity // self.size
        values = self.p.buf.view(-1, self.size).index_select(0, (rows[:, None] * per_row + coarse).flatten())
        fine = values.view(k, -1, FINE)  # (rows, blocks * per_fine, FINE)
        best = (fine.amax(dim=2) if largest else fine.amin(dim=2)).topk(min(self.m, fine.shape[1]), dim=1,
                                                                        largest=largest)
        f = best.indices
        within = fine.view(-1, FINE).index_select(0, (torch.arange(k)[:, None] * fine.shape[1] + f).flatten())
        within = within.view(k, -1, FINE)
        j = within.argmax(dim=2) if largest else within.argmin(dim=2)
        position = torch.gather(coarse, 1, f // per_fine) * self.size + (f % per_fine) * FINE + j
        return best.values, position


def _spares(top: int, p: Pending) -> int:
    """Candidates taken per channel before the peak test (spares for those it rejects)."""
    return 2 * top if len(p.shapes) == 1 else 3 * top


def radii(p: Pending, layer: str) -> list[int]:
    """Per map of ``p``: how far (in map units, both directions) a stronger position rules out a peak: half a
    window, or half a small map's shorter side."""
    return [min(window(layer), 2 * (min(shape) // 2) + 1) // 2 for shape in p.shapes]


def local_peaks(p: Pending, layer: str, blocks: Blocks, rows: torch.Tensor, v: torch.Tensor, i: torch.Tensor,
                largest: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For candidates (rows, m) at positions ``i`` of ``p.flat`` with values ``v``: whether each is a peak (no
    stronger position of its map within its radius in both directions; of equal ones, the first in the map is
    the stronger), and each candidate's (map, y, x).

    Each candidate is tested against its own neighbourhood, (2r + 1)^2 values read from the map, not against the
    other candidates: the cost is linear in the candidates, and one that passes is a local maximum (minimum) of
    its map whatever else was a candidate."""
    heights = torch.tensor([h for h, _ in p.shapes])
    widths = torch.tensor([w for _, w in p.shapes])
    sizes = heights * widths
    starts = torch.cumsum(sizes, 0) - sizes
    mid = torch.searchsorted(starts, i.contiguous(), right=True) - 1  # which map each candidate is in
    start, w = starts[mid], widths[mid]
    local = i - start
    y, x = local // w, local % w
    rad = radii(p, layer)
    r = max(rad)
    steps = torch.arange(-r, r + 1)
    ny = torch.minimum((y[..., None] + steps).clamp_(min=0), (heights[mid] - 1)[..., None])  # (rows, m, 2r+1)
    nx = torch.minimum((x[..., None] + steps).clamp_(min=0), (w - 1)[..., None])
    if len(set(rad)) > 1:  # a smaller map's radius is smaller: its farther neighbours stand in for the candidate
        outside = steps.abs() > torch.tensor(rad)[mid][..., None]
        ny, nx = torch.where(outside, y[..., None], ny), torch.where(outside, x[..., None], nx)
    near = ((start[..., None] + ny * w[..., None])[..., :, None] + nx[..., None, :]).flatten(2)  # (rows, m, K)
    nv = blocks.read(rows, near.flatten(1)).view(near.shape)
    nv[..., near.shape[2] // 2] = -math.inf if largest else math.inf  # the centre: the candidate itself
    best = nv.amax(dim=2) if largest else nv.amin(dim=2)
    ok = (best < v) if largest else (best > v)
    tie = (best == v).nonzero(as_tuple=True)  # an equal neighbour (or the candidate again, clamped at a border)
    if tie[0].numel():
        same = (nv[tie] == v[tie][:, None]) & (near[tie] < i[tie][:, None])  # an equal one earlier in the map
        ok[tie] = ~same.any(dim=1)
    return ok, mid, y, x


def peaks(state: LayerState, layer: str, p: Pending, blocks: Blocks, extreme: torch.Tensor, largest: bool):
    """Candidates from the maps of ``p`` that may enter one end of ``state``: per channel, among its ``blocks.m``
    candidates (the maxima, or minima, of its best runs of 8), the strongest peaks, as (rows, values, (rows, top,
    4) locations). Channels whose ``extreme`` (max or min over the maps) does not beat their current ``top``-th
    entry are skipped, and so are candidates that cannot enter the list."""
    kept = state.values[:, -1] if largest else -state.neg_values[:, -1]
    rows = ((extreme > kept) if largest else (extreme < kept)).nonzero().flatten()
    if rows.numel() == 0:
        return None
    v, i = blocks.candidates(rows, largest)
    useful = (v > kept[rows, None]) if largest else (v < kept[rows, None])
    m = max(1, int(useful.sum(dim=1).max()))
    v, i = v[:, :m], i[:, :m]
    ok, mid, y, x = local_peaks(p, layer, blocks, rows, v, i, largest)
    v = v.masked_fill(~ok, -math.inf if largest else math.inf)
    keep_v, keep = v.topk(min(state.top, m), dim=1, largest=largest)
    keys = torch.tensor(p.keys, dtype=torch.int64)[torch.gather(mid, 1, keep)]  # (rows, top, 2)
    where = torch.cat([keys, torch.gather(y, 1, keep)[..., None], torch.gather(x, 1, keep)[..., None]], dim=-1)
    return rows, (keep_v if largest else -keep_v), where.to(torch.int32)


HIST_CHUNK = 1 << 20  # sampled values binned at a time (a few MB: each pass over them stays in the cache)


def histogram(p: Pending) -> torch.Tensor:
    """(C, HIST_BINS) counts of sign(a) log(1 + |a|) over a regular spatial sample of every map of ``p``."""
    views = []
    for a in p.maps():
        step = max(1, int(math.sqrt(a.shape[1] * a.shape[2] / HIST_SAMPLE)))
        views.append(a[:, ::step, ::step])
    c, n = p.channels, sum(v.shape[1] * v.shape[2] for v in views)
    sample, start = torch.empty(c, n), 0
    for v in views:  # one copy into place
        sample[:, start:start + v.shape[1] * v.shape[2]].view(v.shape).copy_(v)
        start += v.shape[1] * v.shape[2]
    counts = torch.empty(c, HIST_BINS, dtype=torch.int64)
    rows = max(1, HIST_CHUNK // n)
    scale = HIST_BINS * math.log(2) / (2 * HIST_LIMIT)
    for r in range(0, c, rows):
        x = sample[r:r + rows]
        t = x.abs().add_(1).log2_().mul_(scale).copysign_(x).add_(HIST_BINS / 2)
        idx = t.to(torch.int32).clamp_(0, HIST_BINS - 1)  # in integers: NaN (a diverged network) lands in bin 0
        idx += torch.arange(0, x.shape[0] * HIST_BINS, HIST_BINS, dtype=torch.int32)[:, None]
        counts[r:r + rows] = torch.bincount(idx.flatten(), minlength=x.shape[0] * HIST_BINS).view(-1, HIST_BINS)
    return counts


def fold(state: LayerState, layer: str, p: Pending) -> None:
    """Fold the pending pre-ReLU maps of one layer into ``state`` and empty ``p``."""
    if not p.shapes:
        return
    blocks = Blocks(p, min(_spares(state.top, p), p.used))
    high, low = blocks.extremes()
    state.maximum = torch.maximum(state.maximum, high)
    for largest, extreme in ((True, high), (False, low)):
        found = peaks(state, layer, p, blocks, extreme, largest)
        if found is None:
            continue
        rows, v, where = found
        vals, at = (state.values, state.where) if largest else (state.neg_values, state.neg_where)
        vals, at = vals.clone(), at.clone()
        vals[rows], at[rows] = _merge(vals[rows], at[rows], v, where, state.top)
        if largest:
            state.values, state.where = vals, at
        else:
            state.neg_values, state.neg_where = vals, at
    state.hist += histogram(p)
    p.clear()


class Folder:
    """Folds each layer's maps into its state as they come, in batches (bounded memory: one buffer of
    ``PENDING_FLOATS`` values per layer, or one map where a map is larger)."""

    def __init__(self, states: dict[str, LayerState]):
        self.states = states
        self.pending = {n: Pending(s.channels, max(1, PENDING_FLOATS // s.channels)) for n, s in states.items()}

    def add(self, layer: str, a: torch.Tensor, image: int, scale: int) -> None:
        """Fold in the pre-ReLU map ``a`` (C, H, W) of ``layer``: copied now, never kept."""
        p = self.pending.get(layer)
        if p is None:
            return
        if a.numel() >= ALONE_FLOATS and a.is_contiguous() and (a.shape[1] * a.shape[2]) % 32 == 0:
            fold(self.states[layer], layer, Pending.wrap(a, image, scale))  # a large map: no copy
            return
        if p.shapes and not p.fits(a):
            fold(self.states[layer], layer, p)
        p.add(a, image, scale)

    def flush(self) -> None:
        for layer, p in self.pending.items():
            fold(self.states[layer], layer, p)


def percentile(hist: torch.Tensor, q: float) -> np.ndarray:
    """Per channel, the activation below which a share ``q`` of the sampled positions lies (bin centre)."""
    cum = hist.cumsum(dim=1).double()
    total = cum[:, -1:].clamp(min=1)
    b = (cum / total < q).sum(dim=1).clamp(max=HIST_BINS - 1).double()
    t = (b + 0.5) / HIST_BINS * 2 * HIST_LIMIT - HIST_LIMIT
    return (torch.sign(t) * torch.expm1(t.abs())).numpy()
