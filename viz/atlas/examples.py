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
    images: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    resumed: int = 0


def examples_dir(root: Path, weights: str, corpus: str) -> Path:
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
