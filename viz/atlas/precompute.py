"""Precompute a gallery: resumable, batched and crash-safe (the files are :mod:`viz.atlas.records`'); the
renders run here (:class:`InProcess`) or on Ray (:class:`viz.serving.cluster_runs.RayExecutor`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..base.errors import VizError
from ..base.files import atomic_write, safe_name
from ..base.images import IMAGE_FORMATS, decode_image, encode_image
from ..engine.device import resolve_device
from ..engine.layers import get_layer, parse_channels
from ..engine.model import load_model
from ..engine.optimize import Cancel
from ..engine.render import render
from ..engine.settings import RenderSettings, check_channels
from ..engine.views import parse_view
from .examples import reference
from .metrics import summarize
from .records import (
    HISTORY_POINTS,
    MANIFEST_SCHEMA,
    MANIFEST_VERSION,
    RECORD_SCHEMA,
    RECORD_VERSION,
    LayerDir,
    config_name,
    load_valid_record,
    sha256_hex,
)


# ---------------------------------------------------------------------------------------------- precompute
def downsample(history: np.ndarray, points: int = HISTORY_POINTS) -> tuple[list[int], list[float]]:
    """Keep ``points`` evenly spaced steps (always the first and the last), as 1-based step numbers."""
    n = len(history)
    if n == 0:
        return [], []
    idx = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int))
    return [int(i) + 1 for i in idx], [round(float(history[i]), 4) for i in idx]


@dataclass
class PrecomputeReport:
    rendered: int = 0
    skipped: int = 0
    retried: int = 0
    flagged: dict[str, list[str]] = field(default_factory=dict)  # flag -> ["conv5_1:104", ...]
    seconds: float = 0.0
    cancelled: bool = False


def _score(rec: dict) -> tuple[int, float]:
    return (-len(rec["flags"]), rec["final_activation"])


def make_record(d: LayerDir, s: RenderSettings, channel: int, image: np.ndarray, history: np.ndarray,
                final: float, natural: float | None, attempts: int, seconds: float, device: str,
                weights_sha: str, config_settings: dict, data: bytes, fmt: str = "png") -> dict:
    """A channel's record; ``data`` is its image file as stored (``fmt``), and the image's metrics are taken on
    what that file decodes to (for a JPEG, not on the render before compression)."""
    summary = summarize(image if fmt == "png" else decode_image(data), history, final, natural)
    steps_idx, hist = downsample(history)
    return {
        "schema": RECORD_SCHEMA, "version": RECORD_VERSION, "layer": d.layer, "channel": channel,
        "weights": s.weights, "weights_sha256": weights_sha, "config": d.config, "settings": config_settings,
        "seed": s.seed, "steps": s.steps, "attempts": attempts, "image": d.image(channel, fmt).name,
        "image_sha256": sha256_hex(data), "final_activation": summary["final_activation"],
        "natural_max": summary["natural_max"], "activation_ratio": summary["activation_ratio"],
        "natural_reference": "examples:bundled:max", "history": hist, "history_steps": steps_idx,
        "seconds": round(seconds, 3), "device": device,
        "flags": summary["flags"], "evidence": summary["evidence"],
        "metrics": {k: summary[k] for k in ("std", "hf_fraction", "clipped", "colourfulness", "colour_distance")},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_manifest(d: LayerDir, settings: dict) -> dict:
    """Rebuild the layer's manifest from the intact records on disk (atomic)."""
    channels: dict[str, dict] = {}
    for path in sorted(d.path.glob("c[0-9][0-9][0-9][0-9].json")):
        ch = int(path.stem[1:])
        rec = load_valid_record(d, ch, settings)
        if rec is not None:
            channels[str(ch)] = rec
    manifest = {
        "schema": MANIFEST_SCHEMA, "version": MANIFEST_VERSION, "layer": d.layer, "weights": d.weights,
        "config": d.config, "settings": settings, "channels": channels,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write(d.manifest, json.dumps(manifest, separators=(",", ":")).encode())
    return manifest


def retry_settings(s: RenderSettings, attempt: int) -> RenderSettings:
    """Attempt 2, 3, ...: another seed and twice the steps each time."""
    return replace(s, seed=s.seed + 1000 * (attempt - 1), steps=s.steps * 2 ** (attempt - 1))


@contextlib.contextmanager
def gallery_lock(root: Path):
    """Hold ``<root>/.precompute.lock`` for one precompute at a time; a second one is refused with one line."""
    root.mkdir(parents=True, exist_ok=True)
    f = open(root / ".precompute.lock", "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()[:20] or "?"
            raise VizError(f"another precompute (pid {holder}) is writing to {str(root)[:60]}: wait for it to "
                           "finish or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()  # closing releases the lock (and so does the process's death)


def _tries(rec: dict) -> int:
    """Attempts made for a channel (the kept image may come from an earlier, better one)."""
    tries = rec.get("tries", rec["attempts"])
    return tries if isinstance(tries, int) and not isinstance(tries, bool) else rec["attempts"]


@dataclass
class Batch:
    """Channels of one layer rendered together at one attempt (attempt 2, 3, ...: a flagged channel's retry)."""

    dir: LayerDir
    settings: RenderSettings  # the layer's base settings (those the records and the config are made for)
    attempt: int
    channels: list[int]

    @property
    def render_settings(self) -> RenderSettings:
        return retry_settings(self.settings, self.attempt)

    @property
    def text(self) -> str:
        return f"{self.dir.layer} ch {self.channels[0]}..{self.channels[-1]}" + (
            f" (retry {self.attempt - 1})" if self.attempt > 1 else "")


class InProcess:
    """Renders the batches one after the other in this process (the default executor of :func:`precompute`).

    An executor's ``run(take, done, on_step, cancel)`` renders every batch ``take()`` hands out until it returns
    None, giving each result to ``done(batch, result)`` in this (the calling) thread; ``take()`` may hand out more
    batches after a ``done`` (the retries of flagged channels). It returns True when ``cancel()`` stopped it (the
    batches not done are lost, the ones done are written). :class:`viz.serving.cluster_runs.RayExecutor` is the other one."""

    def __init__(self, device, notice: Callable[[str], None] | None = None):
        self.device = device
        self.notice = notice

    def run(self, take, done, on_step, cancel: Cancel = None) -> bool:
        while (b := take()) is not None:
            s = b.render_settings
            result = render(s, b.channels, self.device, callback=lambda info, b=b: on_step(b, info.step),
                            every=max(1, s.steps // 50), cancel=cancel, notice=self.notice)
            if result.cancelled:
                return True
            done(b, result)
        return False


def precompute(
    root: Path | str,
    settings: RenderSettings,
    layers: dict[str, list[int]],
    batch: int = 8,
    device: str = "auto",
    retries: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Cancel = None,
    notice: Callable[[str], None] | None = None,
    executor=None,
    image_format: str = "png",
) -> PrecomputeReport:
    """Render every missing or invalid channel of ``layers`` (name -> channels) into the gallery at ``root``, and
    retry every flagged one that has had fewer than ``1 + retries`` attempts (also after a killed run).

    One precompute at a time per gallery root (:func:`gallery_lock`). ``progress(done, total, text)`` is called
    in image-steps across the whole job. The report's ``flagged`` lists every requested channel that stays
    flagged, rendered in this run or before. ``executor`` renders the batches (default :class:`InProcess`;
    :mod:`viz.serving.cluster_runs` spreads them over Ray workers); records and manifests are written here either way.
    ``image_format`` is how new images are stored (:data:`~viz.base.images.IMAGE_FORMATS`); intact channels stored
    in another format are kept.
    """
    if image_format not in IMAGE_FORMATS:
        raise VizError(f"unknown image format {str(image_format)[:20]!r}: use {' or '.join(IMAGE_FORMATS)}")
    view = parse_view(settings.view, settings.layer)
    if view.images_per_channel() > 1 or view.kind in ("mix", "accent", "direction"):
        raise VizError(f"a gallery holds one image per channel: the {view.kind} view is rendered with "
                       "python -m viz render")
    root = Path(root)
    with gallery_lock(root):
        return _precompute(root, settings, layers, batch, device, retries, progress, cancel, notice, executor,
                           image_format)


def _precompute(root, settings, layers, batch, device, retries, progress, cancel, notice,
                executor=None, image_format: str = "png") -> PrecomputeReport:
    # with another executor this process only writes: it needs the weights' hash and the photo reference
    dev = resolve_device(device if executor is None else "cpu")
    start = time.perf_counter()
    report = PrecomputeReport()
    model = load_model(settings.weights, dev, channels_last=dev.type == "cpu", notice=notice)
    executor = executor or InProcess(dev, notice)
    wdir = safe_name(settings.weights)
    cfg = config_name(settings)
    plan: list[tuple[LayerDir, RenderSettings, list[tuple[int, int]]]] = []
    requested: dict[str, list[int]] = {}
    for layer_name, chans in layers.items():
        layer_settings = replace(settings, layer=get_layer(layer_name).name)
        d = LayerDir(root, wdir, cfg, layer_settings.layer)
        chans = check_channels(d.layer, chans) if chans else []
        if d.path.is_dir():
            for tmp in d.path.glob(".*.tmp"):  # half-written leftovers of a killed run (we hold the lock)
                tmp.unlink(missing_ok=True)
        todo = []
        for c in chans:
            rec = load_valid_record(d, c, layer_settings.to_dict())
            if rec is None:
                todo.append((c, 1))
            elif rec["flags"] and _tries(rec) <= retries:  # a retry that a killed run did not finish
                todo.append((c, _tries(rec) + 1))
        report.skipped += len(chans) - len(todo)
        plan.append((d, layer_settings, todo))
        requested[d.layer] = chans
    count = {"done": 0, "total": sum(len(t) for _, _, t in plan) * settings.steps}  # image-steps of the base budget
    for d, layer_settings, todo in plan:
        if not todo and d.path.is_dir() and not d.manifest.is_file():
            write_manifest(d, layer_settings.to_dict())
    # one queue per layer, in order; a layer's batches are handed out before the next layer's, and the retries
    # of flagged channels join their layer's queue (in one process this is exactly the old sequential order)
    queues = [(d, layer_settings, sorted(todo, key=lambda t: t[1])) for d, layer_settings, todo in plan if todo]
    natural: dict[str, np.ndarray] = {}

    def take() -> Batch | None:
        for d, layer_settings, queue in queues:
            if not queue:
                continue
            if d.layer not in natural:  # size-independent: the best photo position
                natural[d.layer] = reference(model, d.layer, notice=notice)
            group, rest = queue[:batch], queue[batch:]
            attempt = group[0][1]
            queue[:] = [g for g in group if g[1] != attempt] + rest
            return Batch(d, layer_settings, attempt, [c for c, a in group if a == attempt])
        return None

    def on_step(b: Batch, step: int) -> None:
        if progress:
            n = len(b.channels)
            progress(count["done"] + step * n * settings.steps // b.render_settings.steps, count["total"], b.text)

    def done(b: Batch, result) -> None:
        d, base, attempt, chans = b.dir, b.settings, b.attempt, b.channels
        s, cfg_settings = b.render_settings, base.to_dict()
        count["done"] += len(chans) * settings.steps  # a retry counts as one more unit of the base budget
        per_image = result.seconds / len(chans)
        queue = next(q for qd, _, q in queues if qd == d)
        for i, ch in enumerate(chans):
            data = encode_image(result.images[i], image_format)
            rec = make_record(d, s, ch, result.images[i], result.history[:, i], result.final_activation[i],
                              float(natural[d.layer][ch]), attempt, per_image, result.device, model.weights.sha256,
                              cfg_settings, data, image_format)
            old = load_valid_record(d, ch, cfg_settings) if attempt > 1 else None
            best = rec if old is None or _score(rec) > _score(old) else old
            best["tries"] = attempt  # recorded with the kept image, so a rerun knows what was tried
            if best is rec:
                atomic_write(d.stored_image(rec), data)  # image first: a record always points at a whole image
            report.rendered += attempt == 1
            atomic_write(d.record(ch), json.dumps(best, allow_nan=False).encode())
            if best["flags"] and attempt <= retries:
                queue.append((ch, attempt + 1))
                report.retried += 1
                count["total"] += settings.steps
        write_manifest(d, cfg_settings)
        if progress:
            progress(count["done"], count["total"], b.text)

    report.cancelled = bool(executor.run(take, done, on_step, cancel))
    for d, layer_settings, _ in plan:  # every requested channel that stays flagged, whenever it was rendered
        for ch in requested[d.layer]:
            rec = load_valid_record(d, ch, layer_settings.to_dict())
            if rec is not None and rec["flags"]:
                for f in rec["flags"]:
                    report.flagged.setdefault(f, []).append(f"{d.layer}:{ch}")
    report.seconds = time.perf_counter() - start
    return report


def layer_channels(spec: Iterable[str], channels: str) -> dict[str, list[int]]:
    """``--layers conv1_1,conv2_1 --channels 0-63`` -> {layer: channels} (a channel spec per layer)."""
    out = {}
    for name in spec:
        lay = get_layer(name.strip())
        out[lay.name] = parse_channels(lay, channels)
    return out
