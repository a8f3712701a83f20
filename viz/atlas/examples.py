"""Dataset examples: which real photos, and where in them, make each channel fire (and which it hates).

:func:`scan` reads a corpus once per weights: every image at the network's native scale (short side 224) and at
a coarser one (short side 112), one forward pass per image and scale through all 13 conv layers, every spatial
position. Per channel it keeps

- the ``top`` strongest peaks (pre-ReLU local maxima: no stronger position of the same map within half a
  receptive field), each with its receptive-field box in the original image's pixels;
- the ``top`` most negative ones (local minima), likewise;
- the activation distribution: the maximum (exact) and the 99th and 99.9th percentiles (from a log-scale
  histogram of a spatial sample of every map, about 1 % relative resolution).

The bookkeeping lives in :mod:`viz.atlas.extremes`. Memory is bounded by the layer sizes, not by the corpus. State is
checkpointed every few images (atomic), so a scan killed with ``kill -9`` resumes where it was. Results:
``<out>/<weights>/examples/<corpus>/<layer>.json`` and ``corpus.json`` (the images, the skipped ones with why).

The **reference** of a channel (:func:`reference`) is its maximum over the bundled corpus: the strongest response
of any position of any photo. "× best photo" is a result's activation over it, one number per image whatever its
size or page.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..base.corpus import BUNDLED, Corpus, bundled, iter_images, load_rgb
from ..base.errors import VizError
from ..base.files import COMMITTED_GALLERY, atomic_write, read_json, safe_name
from ..base.images import thumbnail
from ..engine.layers import LAYER_NAMES, LAYERS, get_layer
from ..engine.weights import cache_dir
from .extremes import Folder, LayerState, percentile

SCALES = (224, 112)  # short side in pixels: the network's native scale, then a coarser one
TOP = 16
SCHEMA = "vgg16-atlas/examples"
VERSION = 1
CHECKPOINT_EVERY = 8  # images


def box(layer: str, y: int, x: int, factor: float, height: int, width: int) -> list[int]:
    """The receptive field of unit (y, x) in the original image's pixels: [left, top, right, bottom]."""
    lay = get_layer(layer)
    cy, cx = y * lay.stride + (lay.stride - 1) / 2, x * lay.stride + (lay.stride - 1) / 2
    half = lay.receptive_field / 2
    left, top = max(0.0, (cx - half) / factor), max(0.0, (cy - half) / factor)
    right, bottom = min(float(width), (cx + half) / factor), min(float(height), (cy + half) / factor)
    return [int(left), int(top), int(math.ceil(right)), int(math.ceil(bottom))]


def resized(image: np.ndarray, short: int) -> tuple[torch.Tensor, float]:
    """(1, 3, H, W) in [0, 1] with the short side ``short``, and the resize factor."""
    h, w = image.shape[:2]
    f = short / min(h, w)
    x = torch.tensor(image).permute(2, 0, 1)[None].float().div_(255)  # in place: one float copy of the image
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


class Batcher:
    """Runs images through the network at every scale and folds each layer's maps into its state
    (:class:`viz.atlas.extremes.Folder`: small maps in batches, bounded memory)."""

    def __init__(self, states: dict[str, LayerState]):
        self.folder = Folder(states)

    def add_image(self, model, image: np.ndarray, index: int) -> None:
        for s, short in enumerate(SCALES):
            x, _ = resized(image, short)
            forward_all(model, x, lambda layer, a: self.folder.add(layer, a, index, s))

    def flush(self) -> None:
        self.folder.flush()


@dataclass
class ScanReport:
    images: int = 0  # images read, in all runs of this scan
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # all runs of this scan together
    resumed: int = 0  # images an earlier run had already read or skipped
    out: Path | None = None  # where the examples went
    new: int = 0  # images read by this run
    before: float = 0.0  # seconds of the earlier runs
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.started


def examples_dir(root: Path, weights: str, corpus: str) -> Path:
    return Path(root) / safe_name(weights) / "examples" / safe_name(corpus)


def own_corpus(out: Path, weights: str, corpus: Corpus, notice: Callable[[str], None] | None = None) -> Corpus:
    """``corpus`` under a name whose examples folder is its own: a folder of the same name elsewhere (``A/pics``
    then ``B/pics`` into one ``out``) gets the name with its path's digest, ``pics-1a2b3c4d``, never the other's."""
    d = examples_dir(out, weights, corpus.name)
    if corpus.root is None or not (d / "corpus.json").is_file():
        return corpus
    try:
        other = read_json(d / "corpus.json")
        other = other.get("root") if isinstance(other, dict) else None
    except (OSError, ValueError):
        other = None
    if other in (None, str(corpus.root)):
        return corpus
    name = f"{corpus.name}-{hashlib.sha256(str(corpus.root).encode()).hexdigest()[:8]}"
    if notice:
        notice(f"{examples_dir(out, weights, corpus.name)} holds the examples of {str(other)[:80]}: these go to "
               f"{examples_dir(out, weights, name)}")
    return replace(corpus, name=name)


STATE, DONE = ".scan-state.pt", ".scan-done.pt"  # a scan under way (killed: resumed), a finished one (extended)


def _signature(model, corpus: Corpus, layers: list[str], top: int) -> dict:
    return {"weights": model.weights.sha256, "corpus": corpus.name, "root": str(corpus.root), "layers": layers,
            "top": top, "scales": list(SCALES), "version": VERSION, "checkpoint": 2}


def _identity(corpus: Corpus, name: str) -> list[int] | None:
    """What says a file is the one scanned before: its size and modification time."""
    try:
        st = corpus.path(name).stat()
    except (OSError, VizError):
        return None
    return [st.st_size, st.st_mtime_ns]


def load_checkpoint(d: Path, model, corpus: Corpus, layers: list[str], top: int, states: dict[str, LayerState],
                    report: ScanReport, notice: Callable[[str], None] | None = None) -> dict[str, list[int]]:
    """Load what an earlier scan of the same weights, folder, layers and top saved (a killed one's checkpoint, else
    a finished one's state) into ``states`` and ``report``; return the images done (image -> [height, width]).
    Images added since are left to scan; if an image read before changed or is gone, nothing is loaded (its
    contribution cannot be taken out of the lists) and the scan starts again."""
    path = d / STATE if (d / STATE).is_file() else d / DONE
    if not path.is_file():
        return {}
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["signature"] != _signature(model, corpus, layers, top):
            return {}
        seen, names = saved["seen"], list(saved["names"])
        changed = [n for n in [*saved["done"], *saved["skipped"]] if _identity(corpus, n) != seen.get(n)]
        if changed:
            if notice:
                notice(f"{changed[0][:60]} changed since the last scan: scanning again from the start")
            return {}
        index = {name: i for i, name in enumerate(corpus.images)}
        remap = torch.tensor([index.get(n, -1) for n in names] + [-1], dtype=torch.int32)  # old index -> new
        for n in layers:
            states[n].load(saved["states"][n])
            for where in (states[n].where, states[n].neg_where):
                where[..., 0] = remap[where[..., 0].long()]  # -1 (an empty slot) maps to -1 (remap's last entry)
        done, report.skipped = dict(saved["done"]), dict(saved["skipped"])
        report.before = float(saved["seconds"])
    except Exception:  # a checkpoint of another version, or half of one: start again
        for st in states.values():
            st.__post_init__()
        report.skipped, report.before = {}, 0.0
        return {}
    report.resumed = len(done) + len(report.skipped)
    if notice and report.resumed:
        todo = len(corpus.images) - report.resumed
        notice(f"{report.resumed} images already scanned" + (f"; scanning the {todo} others" if todo else ""))
    return done


def save_checkpoint(d: Path, model, corpus: Corpus, layers: list[str], top: int, states: dict[str, LayerState],
                    done: dict[str, list[int]], report: ScanReport, finished: bool = False) -> None:
    """The scan's state, to resume a killed scan (:data:`STATE`) or to extend a finished one (:data:`DONE`, and the
    checkpoint goes)."""
    buf = io.BytesIO()
    seen = {n: _identity(corpus, n) for n in [*done, *report.skipped]}
    torch.save({"signature": _signature(model, corpus, layers, top), "names": list(corpus.images), "seen": seen,
                "seconds": report.elapsed(), "states": {n: s.state() for n, s in states.items()}, "done": done,
                "skipped": report.skipped}, buf)
    atomic_write(d / (DONE if finished else STATE), buf.getvalue())
    if finished:
        (d / STATE).unlink(missing_ok=True)


def scan(model, corpus: Corpus, out: Path, layers: list[str] | None = None, top: int = TOP,
         progress: Callable[[int, int, str], None] | None = None,
         notice: Callable[[str], None] | None = None) -> ScanReport:
    """Scan ``corpus`` with ``model`` into ``examples_dir(out, weights, corpus.name)``; resumable."""
    layers = [get_layer(n).name for n in (layers or LAYER_NAMES)]
    corpus = own_corpus(out, model.weights_name, corpus, notice)
    d = examples_dir(out, model.weights_name, corpus.name)
    d.mkdir(parents=True, exist_ok=True)
    states = {n: LayerState(LAYERS[n].channels, top) for n in layers}
    report = ScanReport(out=d)
    done = load_checkpoint(d, model, corpus, layers, top, states, report, notice)

    def save_state() -> None:
        save_checkpoint(d, model, corpus, layers, top, states, done, report)


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
            report.new += 1
        if progress:
            progress(count, total, name[-40:])
        if count % CHECKPOINT_EVERY == 0:
            batcher.flush()
            save_state()
    batcher.flush()
    report.images, report.seconds = len(done), report.elapsed()
    write_results(d, corpus, model, states, done, report, top)
    save_checkpoint(d, model, corpus, layers, top, states, done, report, finished=True)
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
    return COMMITTED_GALLERY / weights / "examples" / "bundled"


_cache: dict[tuple[str, str], LayerExamples] = {}


def reference_dirs(weights: str) -> list[Path]:
    """Where the bundled corpus's examples for ``weights`` may be: committed beside the app, or cached."""
    return [committed_dir(weights), examples_dir(cache_dir() / "examples", weights, "bundled")]


def reference_available(weights: str) -> bool:
    """Whether :func:`reference` can answer without scanning (the files exist; their hash is checked on use)."""
    return any((d / "corpus.json").is_file() for d in reference_dirs(weights))


def bundled_examples(model, layer: str, notice: Callable[[str], None] | None = None) -> LayerExamples:
    """The bundled corpus's examples of ``layer`` for ``model``'s weights (read once per process).

    Read from the committed examples (oxford) or from the cache; for other weights the bundled corpus is
    scanned once (all layers, about 20 s on 2 cores) into ``<cache>/examples``."""
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
    return load_rgb(Path(path))


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
        # the photo's name breaks between words, not inside one ("motorcycle right", not "motorcycle_righ t.png")
        name = Path(entry["image"]).stem.replace("_", " ")
        tiles.append((thumbnail(crop, side), f"{entry['activation']:.4g} · {name}"))
    return tiles


def in_context(ex: LayerExamples, channel: int, side: int = 320) -> tuple[np.ndarray, str] | None:
    """The strongest example's whole photo with its receptive field outlined."""
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
    """Images per second on the same images and scales: the bare forward passes vs the whole scan (resizing and
    every layer's bookkeeping included in both, so the ratio is what the examples cost). The two are interleaved
    image by image (which goes first alternates), so that a shared machine's drifting speed, which changes over
    seconds, weighs on both alike; ``repeats`` passes over the images, after a warm-up, are added up."""
    images = [im for _, _, im, _ in iter_images(corpus) if im is not None][:limit]

    def run() -> tuple[float, float]:
        bare = Batcher({})
        scan = Batcher({n: LayerState(LAYERS[n].channels, TOP) for n in LAYER_NAMES})
        seconds = [0.0, 0.0]
        for i, image in enumerate(images):
            for side in ((0, 1) if i % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                (bare if side == 0 else scan).add_image(model, image, i)
                seconds[side] += time.perf_counter() - start
        start = time.perf_counter()
        scan.flush()
        seconds[1] += time.perf_counter() - start
        return seconds[0], seconds[1]

    Batcher({}).add_image(model, images[0], 0)  # warm-up
    runs = [run() for _ in range(repeats)]
    bare, scanned = sum(b for b, _ in runs), sum(s for _, s in runs)
    n = len(images) * repeats
    return {"images": len(images), "scales": list(SCALES), "repeats": repeats, "bare_images_per_s": n / bare,
            "scan_images_per_s": n / scanned, "ratio": bare / scanned,
            "ratios": [round(b / s, 3) for b, s in runs]}
