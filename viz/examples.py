"""Dataset examples: which real photos, and where in them, make each channel fire (and which it hates).

:func:`scan` reads a corpus once per weights: every image at the network's native scale (short side 224) and at
a coarser one (short side 112), one forward pass per image and scale through all 13 conv layers, every spatial
position. Per channel it keeps

- the ``top`` strongest positions (pre-ReLU), at least half a receptive field apart within an image, each with
  its receptive-field box in the original image's pixels;
- the ``top`` most negative positions, likewise;
- the activation distribution: the maximum (exact) and the 99th and 99.9th percentiles (from a log-scale
  histogram of a spatial sample of every map, about 1 % relative resolution).

Memory is bounded by the layer sizes, not by the corpus. State is checkpointed every few images (atomic), so a
scan killed with ``kill -9`` resumes where it was. Results:
``<out>/<weights>/examples/<corpus>/<layer>.json`` and ``corpus.json`` (the images, the skipped ones with why).

The **reference** of a channel (:func:`reference`) is its maximum over the bundled corpus: the strongest response
of any position of any photo. "× best photo" is a result's activation over it, one number per image whatever its
size or page.
"""

from __future__ import annotations

import functools
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .corpus import Corpus, bundled
from .errors import VizError
from .files import atomic_write
from .layers import LAYER_NAMES, LAYERS, get_layer

SCALES = (224, 112)  # short side in pixels: the network's native scale, then a coarser one
TOP = 16
HIST_BINS = 1024
HIST_LIMIT = math.log1p(1e5)  # activations up to 1e5 in magnitude are binned; beyond, the end bins
HIST_SAMPLE = 256  # positions per channel, image and scale that enter the histogram (a regular spatial sample)
SCHEMA = "vgg16-atlas/examples"
VERSION = 1
CHECKPOINT_EVERY = 8  # images


def window(layer: str) -> int:
    """Peak-suppression window in map units: peaks are at least half a receptive field apart."""
    lay = get_layer(layer)
    return 2 * max(1, lay.receptive_field // (4 * lay.stride)) + 1


def box(layer: str, y: int, x: int, factor: float, height: int, width: int) -> list[int]:
    """The receptive field of unit (y, x) in the original image's pixels: [left, top, right, bottom]."""
    lay = get_layer(layer)
    cy, cx = y * lay.stride + (lay.stride - 1) / 2, x * lay.stride + (lay.stride - 1) / 2
    half = lay.receptive_field / 2
    left, top = max(0.0, (cx - half) / factor), max(0.0, (cy - half) / factor)
    right, bottom = min(float(width), (cx + half) / factor), min(float(height), (cy + half) / factor)
    return [int(left), int(top), int(math.ceil(right)), int(math.ceil(bottom))]


@dataclass
class LayerState:
    """Running results for one layer (tensors of shape (C, TOP) and (C, HIST_BINS))."""

    channels: int
    top: int
    values: torch.Tensor = field(init=False)
    where: torch.Tensor = field(init=False)  # (C, top, 4): image index, scale index, y, x
    neg_values: torch.Tensor = field(init=False)
    neg_where: torch.Tensor = field(init=False)
    hist: torch.Tensor = field(init=False)
    maximum: torch.Tensor = field(init=False)

    def __post_init__(self):
        c, k = self.channels, self.top
        self.values = torch.full((c, k), -math.inf)
        self.where = torch.full((c, k, 4), -1, dtype=torch.int32)
        self.neg_values = torch.full((c, k), -math.inf)  # of -activation
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


@dataclass
class Pending:
    """Maps of one layer waiting to be folded in together (one ``topk`` per end for all of them)."""

    maps: list[torch.Tensor] = field(default_factory=list)  # (C, H, W) each
    keys: list[tuple[int, int]] = field(default_factory=list)  # (image, scale) of each map
    numel: int = 0

    def add(self, a: torch.Tensor, image: int, scale: int) -> None:
        self.maps.append(a)
        self.keys.append((image, scale))
        self.numel += a.numel()

    def clear(self) -> None:
        self.maps, self.keys, self.numel = [], [], 0


@dataclass
class Blocks:
    """Each row of ``flat`` (C, N) cut into blocks of about sqrt(N / m) values (a tail of fewer stands apart),
    with every block's maximum and minimum. The row's extremes follow from them, and a row's ``m`` best blocks
    hold every one of its ``m`` best values, so :meth:`topk` searches only those blocks and the tail: ``topk``
    costs far more per value than a block extreme does. One pass per end serves both the extremes and the search."""

    flat: torch.Tensor
    m: int
    size: int = field(init=False)
    high: torch.Tensor | None = field(init=False, default=None)  # (C, blocks) maxima; None: too few blocks
    low: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self):
        c, n = self.flat.shape
        self.size = 1 << max(3, round(math.log2(max(1.0, n / self.m) ** 0.5)))  # least work in the two stages
        nb = n // self.size
        if nb > 2 * self.m:
            blocks = self.flat[:, :nb * self.size].view(c, nb, self.size)
            self.high, self.low = blocks.amax(dim=2), blocks.amin(dim=2)  # (torch.aminmax is several times slower)

    def extremes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the maximum and the minimum of all its values."""
        if self.high is None:
            return self.flat.amax(dim=1), self.flat.amin(dim=1)
        high, low = self.high.amax(dim=1), self.low.amin(dim=1)
        tail = self.flat[:, self.high.shape[1] * self.size:]
        if tail.shape[1]:
            high, low = torch.maximum(high, tail.amax(dim=1)), torch.minimum(low, tail.amin(dim=1))
        return high, low

    def topk(self, rows: torch.Tensor, largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``flat[rows].topk(m, dim=1, largest=largest)``, exactly: (values, positions in the row). ``rows`` are
        sorted and distinct (as ``nonzero`` gives them): as many as ``flat`` has means all of them."""
        n = self.flat.shape[1]
        every = rows.numel() == self.flat.shape[0]
        if self.high is None:
            return (self.flat if every else self.flat[rows]).topk(min(self.m, n), dim=1, largest=largest)
        extreme = self.high if largest else self.low
        _, best = (extreme if every else extreme[rows]).topk(self.m, dim=1, largest=largest)  # block numbers
        idx = (best[..., None] * self.size + torch.arange(self.size)).flatten(1)  # (rows, m * size) positions
        nb = extreme.shape[1]
        idx = torch.cat([idx, torch.arange(nb * self.size, n).expand(rows.numel(), -1)], dim=1)
        values = torch.gather(self.flat, 1, idx) if every else self.flat[rows[:, None], idx]
        v, i = values.topk(self.m, dim=1, largest=largest)
        return v, torch.gather(idx, 1, i)


def _spares(state: LayerState, p: Pending) -> int:
    """Candidates taken per channel before peak suppression (spares for those it removes)."""
    return state.top + 8 if len(p.maps) == 1 else 4 * state.top + 8


def _near_stronger(p: Pending, layer: str, mid: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """For candidates (rows, m), strongest first, in map ``mid`` at (``y``, ``x``): whether a stronger one of the
    same map lies within half a window in both directions."""
    radii = [min(window(layer), 2 * (min(a.shape[1:]) // 2) + 1) // 2 for a in p.maps]  # a small map: its half
    span = max(a.shape[1] for a in p.maps) + 2 * max(radii) + 1  # maps' rows set further apart than any radius,
    row = y + mid.to(y.dtype) * span  # so one distance test covers "in the same map"
    small = span * len(p.maps) < 2**15 and max(a.shape[2] for a in p.maps) < 2**15
    dtype = torch.int16 if small else torch.int32  # half the bytes through the (rows, m, m) tests
    row, x = row.to(dtype), x.to(dtype)
    r = radii[0] if len(set(radii)) == 1 else torch.tensor(radii, dtype=dtype)[mid][:, None, :]
    near = ((row[:, :, None] - row[:, None, :]).abs_() <= r) & ((x[:, :, None] - x[:, None, :]).abs_() <= r)
    return near.triu_(diagonal=1).any(dim=1)  # near[., i, j] with i < j: candidate i is stronger than j


def _peaks(state: LayerState, layer: str, p: Pending, blocks: Blocks, extreme: torch.Tensor, largest: bool):
    """Candidates from the concatenated maps ``blocks.flat`` (C, N) that may enter one end of ``state``: per
    channel, the strongest (or most negative) positions more than half a window apart within their map, as values
    and (C, m, 4) locations. Channels whose ``extreme`` (max or min over the maps) does not beat their current
    ``top``-th entry are skipped."""
    kept = state.values[:, -1] if largest else -state.neg_values[:, -1]
    rows = ((extreme > kept) if largest else (extreme < kept)).nonzero().flatten()
    if rows.numel() == 0:
        return None
    v, i = blocks.topk(rows, largest)
    useful = (v > kept[rows, None]) if largest else (v < kept[rows, None])  # the rest cannot enter the list
    m = max(1, int(useful.sum(dim=1).max()))
    v, i = v[:, :m], i[:, :m]
    sizes = torch.tensor([a.shape[1] * a.shape[2] for a in p.maps])
    starts = torch.cumsum(sizes, 0) - sizes
    widths = torch.tensor([a.shape[2] for a in p.maps], dtype=torch.int32)
    mid = torch.searchsorted(starts, i.contiguous(), right=True) - 1  # which map each candidate is in
    local = (i - starts[mid]).to(torch.int32)
    y, x = local // widths[mid], local % widths[mid]
    v = v.masked_fill(_near_stronger(p, layer, mid, y, x), -math.inf if largest else math.inf)
    keep_v, keep = v.topk(min(state.top, m), dim=1, largest=largest)
    keys = torch.tensor(p.keys, dtype=torch.int64)[torch.gather(mid, 1, keep)]  # (rows, top, 2)
    where = torch.cat([keys, torch.gather(y, 1, keep)[..., None].long(), torch.gather(x, 1, keep)[..., None].long()],
                      dim=-1)
    return rows, (keep_v if largest else -keep_v), where.to(torch.int32)


def reduce_maps(state: LayerState, layer: str, p: Pending) -> None:
    """Fold the pending pre-ReLU maps of one layer into ``state`` and empty ``p``."""
    if not p.maps:
        return
    c = state.channels
    flat = torch.cat([a.flatten(1) for a in p.maps], dim=1) if len(p.maps) > 1 else p.maps[0].flatten(1)
    blocks = Blocks(flat, min(_spares(state, p), flat.shape[1]))
    high, low = blocks.extremes()
    state.maximum = torch.maximum(state.maximum, high)
    for largest, extreme in ((True, high), (False, low)):
        found = _peaks(state, layer, p, blocks, extreme, largest)
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
    samples = []
    for a in p.maps:
        step = max(1, int(math.sqrt(a.shape[1] * a.shape[2] / HIST_SAMPLE)))
        samples.append(a[:, ::step, ::step].flatten(1))
    sample = torch.cat(samples, dim=1)
    t = sample.abs().add_(1).log_().copysign_(sample)  # sign(a) log(1 + |a|); log vectorizes, log1p does not
    idx = t.add_(HIST_LIMIT).mul_(HIST_BINS / (2 * HIST_LIMIT)).long().clamp_(0, HIST_BINS - 1)
    idx += torch.arange(c)[:, None] * HIST_BINS
    state.hist += torch.bincount(idx.flatten(), minlength=c * HIST_BINS).view(c, HIST_BINS)
    p.clear()


def percentile(hist: torch.Tensor, q: float) -> np.ndarray:
    """Per channel, the activation below which a share ``q`` of the sampled positions lies (bin centre)."""
    cum = hist.cumsum(dim=1).double()
    total = cum[:, -1:].clamp(min=1)
    b = (cum / total < q).sum(dim=1).clamp(max=HIST_BINS - 1).double()
    t = (b + 0.5) / HIST_BINS * 2 * HIST_LIMIT - HIST_LIMIT
    return (torch.sign(t) * torch.expm1(t.abs())).numpy()


def resized(image: np.ndarray, short: int) -> tuple[torch.Tensor, float]:
    """(1, 3, H, W) in [0, 1] with the short side ``short``, and the resize factor."""
    h, w = image.shape[:2]
    f = short / min(h, w)
    x = torch.tensor(image).permute(2, 0, 1)[None].float().div(255)
    size = (max(1, round(h * f)), max(1, round(w * f)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False), f


@torch.no_grad()
def forward_all(model, x: torch.Tensor, on_conv: Callable[[str, torch.Tensor], None] | None = None) -> None:
    """One pass through every conv layer; ``on_conv(layer, pre-ReLU map)`` sees each map before its ReLU.

    The modules are called one by one (no hooks): the shared model serves other threads at the same time.
    The ReLUs work in place: ``on_conv`` must copy a map it keeps."""
    convs = {lay.index: lay.name for lay in LAYERS.values()}
    last = LAYERS[LAYER_NAMES[-1]].index
    x = model.normalize(x.to(next(model.parameters()).device))
    for i, module in enumerate(model.features[: last + 1]):
        x = module(x)
        if i in convs and on_conv is not None:
            on_conv(convs[i], x[0].float().cpu())


# Small maps (deep layers, coarse scale) wait and are folded in together, up to this many values per layer (8 MB):
# one topk over many maps costs far less than one per map. Larger maps are folded in at once, without a copy
# (allocating and copying them costs more than batching saves).
PENDING_FLOATS = 5_000_000
ALONE_FLOATS = 2_500_000


class Batcher:
    """Runs images through the network and folds each layer's maps into its state, small maps in batches
    (bounded memory: at most ``PENDING_FLOATS`` values wait per layer)."""

    def __init__(self, states: dict[str, LayerState]):
        self.states = states
        self.pending = {n: Pending() for n in states}

    def add_image(self, model, image: np.ndarray, index: int) -> None:
        for s, short in enumerate(SCALES):
            x, _ = resized(image, short)
            forward_all(model, x, lambda layer, a: self._add(layer, a, index, s))

    def _add(self, layer: str, a: torch.Tensor, index: int, scale: int) -> None:
        p = self.pending.get(layer)
        if p is None:
            return
        if a.numel() >= ALONE_FLOATS:
            alone = Pending()
            alone.add(a, index, scale)
            reduce_maps(self.states[layer], layer, alone)
            return
        p.add(a.clone(), index, scale)
        if p.numel >= PENDING_FLOATS:
            reduce_maps(self.states[layer], layer, p)

    def flush(self) -> None:
        for layer, p in self.pending.items():
            reduce_maps(self.states[layer], layer, p)


@dataclass
class ScanReport:
    images: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    resumed: int = 0


def examples_dir(root: Path, weights: str, corpus: str) -> Path:
    from .gallery import safe_name

    return Path(root) / safe_name(weights) / "examples" / safe_name(corpus)


def _signature(model, corpus: Corpus, layers: list[str], top: int) -> dict:
    return {"weights": model.weights.sha256, "corpus": corpus.signature, "layers": layers, "top": top,
            "scales": list(SCALES), "version": VERSION}


def load_checkpoint(d: Path, model, corpus: Corpus, layers: list[str], top: int, states: dict[str, LayerState],
                    report: ScanReport, notice: Callable[[str], None] | None = None) -> dict[str, list[int]]:
    """Load the state a killed scan of the same weights, corpus, layers and top saved into ``states`` and
    ``report``; return the images done (image -> [height, width]), empty when there is nothing to resume."""
    ckpt = d / ".scan-state.pt"
    if not ckpt.is_file():
        return {}
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        if saved["signature"] != _signature(model, corpus, layers, top):
            return {}
        for n in layers:
            states[n].load(saved["states"][n])
        done, report.skipped = dict(saved["done"]), dict(saved["skipped"])
    except Exception:  # a checkpoint of another version, or half of one: start again
        for st in states.values():
            st.__post_init__()
        report.skipped = {}
        return {}
    report.resumed = len(done) + len(report.skipped)
    if notice and report.resumed:
        notice(f"resuming the scan after {report.resumed} images")
    return done


def save_checkpoint(d: Path, model, corpus: Corpus, layers: list[str], top: int, states: dict[str, LayerState],
                    done: dict[str, list[int]], report: ScanReport) -> None:
    buf = io.BytesIO()
    torch.save({"signature": _signature(model, corpus, layers, top),
                "states": {n: s.state() for n, s in states.items()}, "done": done, "skipped": report.skipped}, buf)
    atomic_write(d / ".scan-state.pt", buf.getvalue())


def merge_states(into: LayerState, part: LayerState) -> None:
    """Fold a state of other images (a window scanned elsewhere) into ``into``: the best ``top`` of both lists at
    each end, the larger maximum, the summed histogram."""
    into.maximum = torch.maximum(into.maximum, part.maximum)
    into.hist = into.hist + part.hist
    into.values, into.where = _merge(into.values, into.where, part.values, part.where, into.top)
    into.neg_values, into.neg_where = _merge(into.neg_values, into.neg_where, part.neg_values, part.neg_where,
                                             into.top)


def scan(model, corpus: Corpus, out: Path, layers: list[str] | None = None, top: int = TOP,
         progress: Callable[[int, int, str], None] | None = None,
         notice: Callable[[str], None] | None = None) -> ScanReport:
    """Scan ``corpus`` with ``model`` into ``examples_dir(out, weights, corpus.name)``; resumable."""
    layers = [get_layer(n).name for n in (layers or LAYER_NAMES)]
    d = examples_dir(out, model.weights_name, corpus.name)
    d.mkdir(parents=True, exist_ok=True)
    states = {n: LayerState(LAYERS[n].channels, top) for n in layers}
    report = ScanReport()
    done = load_checkpoint(d, model, corpus, layers, top, states, report, notice)
    start = time.perf_counter()

    def save_state() -> None:
        save_checkpoint(d, model, corpus, layers, top, states, done, report)

    from .corpus import iter_images

    index = {name: i for i, name in enumerate(corpus.images)}
    todo = [n for n in corpus.images if n not in done and n not in report.skipped]
    total, count = len(corpus.images), len(corpus.images) - len(todo)
    batcher = Batcher(states)
    for _, name, image, why in iter_images(corpus, skip=set(done) | set(report.skipped)):
        count += 1
        if image is None:
            report.skipped[name] = why
            if notice:
                notice(f"skipped {name[:80]}: {why}")
        else:
            batcher.add_image(model, image, index[name])
            done[name] = list(image.shape[:2])
        if progress:
            progress(count, total, name[-40:])
        if count % CHECKPOINT_EVERY == 0:
            batcher.flush()
            save_state()
    batcher.flush()
    report.images, report.seconds = len(done), time.perf_counter() - start
    write_results(d, corpus, model, states, done, report, top)
    (d / ".scan-state.pt").unlink(missing_ok=True)
    return report


def write_results(d: Path, corpus: Corpus, model, states: dict[str, LayerState], done: dict[str, list[int]],
                  report: ScanReport, top: int) -> None:
    names = list(corpus.images)
    for layer, st in states.items():
        p99, p999 = percentile(st.hist, 0.99), percentile(st.hist, 0.999)

        def entries(values, where, sign):
            out = []
            for v, (img, sc, y, x) in zip(values.tolist(), where.tolist()):
                if img < 0 or not math.isfinite(v):
                    continue
                name = names[img]
                h, w = done[name]
                factor = SCALES[sc] / min(h, w)
                out.append({"image": name, "scale": SCALES[sc], "box": box(layer, y, x, factor, h, w),
                            "activation": round(sign * v, 4)})
            return out

        channels = []
        for c in range(st.channels):
            channels.append({
                "top": entries(st.values[c], st.where[c], 1.0),
                "bottom": entries(st.neg_values[c], st.neg_where[c], -1.0),
                "max": round(float(st.maximum[c]), 4) if math.isfinite(float(st.maximum[c])) else None,
                "p99": round(float(p99[c]), 4), "p999": round(float(p999[c]), 4),
            })
        obj = {"schema": SCHEMA, "version": VERSION, "layer": layer, "weights": model.weights_name,
               "weights_sha256": model.weights.sha256, "corpus": corpus.name, "top": top, "scales": list(SCALES),
               "channels": channels}
        atomic_write(d / f"{layer}.json", json.dumps(obj, separators=(",", ":"), allow_nan=False).encode())
    meta = {**corpus.to_json(), "read": len(done), "skipped": report.skipped, "seconds": round(report.seconds, 1),
            "weights": model.weights_name, "licences": None}
    if corpus.root is None:
        from .corpus import BUNDLED

        meta["licences"] = {name: lic for name, (_, _, lic) in BUNDLED.items()}
    atomic_write(d / "corpus.json", json.dumps(meta, indent=1).encode())


# --------------------------------------------------------------------------------------------------- reading
@dataclass
class LayerExamples:
    layer: str
    corpus: Corpus
    channels: list[dict]
    weights_sha256: str = ""

    def reference(self) -> np.ndarray:
        """Per channel, the strongest response at any position of any image (NaN where unknown)."""
        return np.array([np.nan if ch["max"] is None else ch["max"] for ch in self.channels], dtype=np.float64)


def read_layer(d: Path, layer: str) -> LayerExamples:
    """The examples of ``layer`` in the examples folder ``d`` (validated), or :class:`VizError`."""
    from .gallery import read_json

    layer = get_layer(layer).name
    try:
        obj = read_json(d / f"{layer}.json")
        corpus = Corpus.from_json(read_json(d / "corpus.json"))
    except FileNotFoundError:
        raise VizError(f"no dataset examples for {layer} in {d}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise VizError(f"the examples in {d} are unreadable ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA or obj.get("layer") != layer or \
            not isinstance(obj.get("channels"), list) or len(obj["channels"]) != LAYERS[layer].channels:
        raise VizError(f"{layer}.json in {d} is not an examples file for {layer}")
    return LayerExamples(layer, corpus, obj["channels"], str(obj.get("weights_sha256", "")))


def committed_dir(weights: str) -> Path:
    return Path(__file__).resolve().parent.parent / "gallery" / weights / "examples" / "bundled"


_cache: dict[tuple[str, str], LayerExamples] = {}


def reference_dirs(weights: str) -> list[Path]:
    """Where the bundled corpus's examples for ``weights`` may be: committed beside the app, or cached."""
    from .weights import cache_dir

    return [committed_dir(weights), examples_dir(cache_dir() / "examples", weights, "bundled")]


def reference_available(weights: str) -> bool:
    """Whether :func:`reference` can answer without scanning (the files exist; their hash is checked on use)."""
    return any((d / "corpus.json").is_file() for d in reference_dirs(weights))


def bundled_examples(model, layer: str, notice: Callable[[str], None] | None = None) -> LayerExamples:
    """The bundled corpus's examples of ``layer`` for ``model``'s weights (read once per process).

    Read from the committed examples (oxford) or from the cache; for other weights the bundled corpus is
    scanned once (all layers, a few seconds on 2 cores) into ``<cache>/examples``."""
    from .weights import cache_dir

    layer = get_layer(layer).name
    key = (model.weights.sha256, layer)
    if key not in _cache:
        for d in reference_dirs(model.weights_name):
            try:
                ex = read_layer(d, layer)
            except VizError:
                continue
            if ex.weights_sha256 == model.weights.sha256:
                _cache[key] = ex
                break
        else:
            if notice:
                notice(f"scanning the bundled photos with weights {model.weights_name} (once)")
            scan(model, bundled(), cache_dir() / "examples")
            _cache[key] = read_layer(examples_dir(cache_dir() / "examples", model.weights_name, "bundled"), layer)
    return _cache[key]


def reference(model, layer: str, notice: Callable[[str], None] | None = None) -> np.ndarray:
    """Per channel of ``layer``: its strongest response anywhere in the bundled photos, for ``model``'s weights."""
    return bundled_examples(model, layer, notice).reference()


# ------------------------------------------------------------------------------------------------ for people
@functools.lru_cache(maxsize=32)
def _photo(path: str) -> np.ndarray:
    from .corpus import load_rgb

    return load_rgb(Path(path))


def thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(image)
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(im)


def example_tiles(ex: LayerExamples, channel: int, which: str = "top", n: int = 8,
                  side: int = 128) -> list[tuple[np.ndarray, str]]:
    """Up to ``n`` receptive-field crops of ``channel``'s strongest (``top``) or most negative (``bottom``)
    examples, with a caption (activation, photo); photos that cannot be read any more are left out."""
    tiles = []
    for entry in ex.channels[channel][which][:n]:
        try:
            image = _photo(str(ex.corpus.path(entry["image"])))
        except VizError:
            continue
        left, top, right, bottom = entry["box"]
        crop = image[max(0, top):max(top + 1, bottom), max(0, left):max(left + 1, right)]
        tiles.append((thumbnail(crop, side), f"{entry['activation']:.4g} · {Path(entry['image']).name}"))
    return tiles


def in_context(ex: LayerExamples, channel: int, side: int = 320) -> tuple[np.ndarray, str] | None:
    """The strongest example's whole photo with its receptive field outlined."""
    from PIL import Image, ImageDraw

    entries = ex.channels[channel]["top"]
    if not entries:
        return None
    entry = entries[0]
    try:
        image = _photo(str(ex.corpus.path(entry["image"])))
    except VizError:
        return None
    im = Image.fromarray(image)
    width = max(2, round(max(im.size) / 150))
    ImageDraw.Draw(im).rectangle(entry["box"], outline=(255, 64, 0), width=width)
    return thumbnail(np.asarray(im), side), f"{entry['image']} · receptive field of its strongest position"


def scan_throughput(model, corpus: Corpus, limit: int | None = None, repeats: int = 3) -> dict:
    """Images per second on the same images and scales: the bare forward passes vs the whole scan (decoding,
    resizing and every layer's bookkeeping included in both, so the ratio is what the examples cost). Each is
    timed ``repeats`` times, interleaved, and the fastest run counts (on a shared machine noise only adds time)."""
    from .corpus import iter_images

    images = [im for _, _, im, _ in iter_images(corpus) if im is not None][:limit]

    def run(with_stats: bool) -> float:
        batcher = Batcher({n: LayerState(LAYERS[n].channels, TOP) for n in LAYER_NAMES} if with_stats else {})
        start = time.perf_counter()
        for i, image in enumerate(images):
            batcher.add_image(model, image, i)
        batcher.flush()
        return time.perf_counter() - start

    run(False)  # warm-up
    bare, scanned = math.inf, math.inf
    for _ in range(repeats):
        bare, scanned = min(bare, run(False)), min(scanned, run(True))
    return {"images": len(images), "scales": list(SCALES), "bare_images_per_s": len(images) / bare,
            "scan_images_per_s": len(images) / scanned, "ratio": bare / scanned}
