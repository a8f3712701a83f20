"""The CLI's batch workloads on a Ray cluster (:mod:`viz.serving.cluster` joins it and holds the render actor).

- :func:`precompute`: the channels of a gallery spread over :class:`~viz.serving.cluster.RenderWorker` actors (each
  holds the model) as batches; the driver writes every record and manifest exactly as
  :func:`viz.atlas.precompute.precompute` does in one process (it *is* that function, with :class:`RayExecutor`
  rendering the batches). A worker that dies mid-batch loses only that batch: it is rendered again on the others
  and the run finishes.
- :func:`scan`: :func:`viz.atlas.examples.scan` as a Ray Data pipeline: windows of the corpus are read and decoded by
  tasks, scanned by actors that hold the model (each window into its own per-channel top-k and histogram), and
  the windows are merged in corpus order on the driver, giving the same results as the scan in one process.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zlib
from collections import deque
from collections.abc import Callable

import numpy as np
import torch

from ..atlas import examples as ex
from ..atlas.examples import Batcher, LayerState
from ..atlas.extremes import merge_states
from ..atlas.precompute import precompute as gallery_precompute
from ..base.corpus import Corpus, load_rgb
from ..base.errors import VizError
from ..engine.device import resolve_device
from ..engine.layers import LAYER_NAMES, LAYERS, get_layer
from ..engine.model import load_model
from ..engine.weights import load_weights
from .cluster import connect, default_workers, ray_module, start_workers, task_error, worker_env


# -------------------------------------------------------------------------------------------- precompute
class RayExecutor:
    """Renders :func:`viz.atlas.precompute.precompute`'s batches on Ray actors, one batch per actor at a time, and hands
    each result back to the driver (which writes it). A batch whose actor dies is rendered again on another one;
    the run fails only when no worker is left. ``events(kind, info)`` sees ``dispatch``, ``done`` and ``lost``
    (with the actor's pid; tests kill a worker with it)."""

    def __init__(self, start: Callable[[], list], device: str = "auto",
                 notice: Callable[[str], None] | None = None,
                 events: Callable[[str, dict], None] | None = None):
        self.start = start  # starts the actors: only once there is a batch to render
        self.actors: list = []
        self.started: list = []
        self.device = device
        self.notice = notice
        self.events = events
        self.lost_workers = 0
        self.requeued = 0
        self.batches = 0
        self.pids: dict[int, int] = {}

    def _start(self) -> None:
        self.started = list(self.start())
        self.actors = list(self.started)
        self.pids = dict(zip(map(id, self.actors), ray_module().get([a.pid.remote() for a in self.actors])))

    def _event(self, kind: str, actor, batch) -> None:
        if self.events:
            self.events(kind, {"pid": self.pids[id(actor)], "layer": batch.dir.layer, "channels": batch.channels,
                               "attempt": batch.attempt})

    def run(self, take, done, on_step, cancel=None) -> bool:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        ray = ray_module()
        first = take()
        if first is None:  # nothing left to render (a finished gallery): no worker is started
            return False
        self._start()
        idle = list(self.actors)
        inflight: dict = {}  # ref -> (batch, actor, key)
        again: deque = deque()  # batches whose worker died
        n = 0
        try:
            while True:
                if cancel is not None and cancel():
                    for _, actor, key in inflight.values():
                        actor.cancel.remote(key)
                    ray.wait(list(inflight), num_returns=len(inflight), timeout=60)
                    return True
                while idle:
                    b = again.popleft() if again else first if first is not None else take()
                    first = None
                    if b is None:
                        break
                    actor, key = idle.pop(0), f"batch-{n}"
                    n += 1
                    s = b.render_settings
                    ref = actor.render.remote(key, s, b.channels, self.device, max(1, s.steps // 50))
                    inflight[ref] = (b, actor, key)
                    self._event("dispatch", actor, b)
                if not inflight:
                    if again:
                        raise VizError("every Ray worker of this precompute died: nothing is left to render on")
                    return False
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.25)
                for ref in ready:
                    b, actor, key = inflight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except (ActorDiedError, ActorUnavailableError, RayActorError):
                        self.lost_workers += 1
                        self.requeued += 1
                        self.actors.remove(actor)
                        again.append(b)
                        self._event("lost", actor, b)
                        if self.notice:
                            self.notice(f"a Ray worker (pid {self.pids[id(actor)]}) died: {b.text} is rendered "
                                        f"again on the {len(self.actors)} left")
                        if not self.actors:
                            raise VizError("every Ray worker of this precompute died: nothing is left to render on"
                                           ) from None
                        continue
                    except Exception as exc:
                        raise task_error(exc, f"rendering {b.text}") from None
                    idle.append(actor)
                    self.batches += 1
                    self._event("done", actor, b)
                    done(b, result)
        finally:
            for _, actor, key in inflight.values():  # an error or cancel: stop what still runs
                try:
                    actor.cancel.remote(key)
                except Exception:
                    pass


def precompute(address: str, root, settings, layers: dict[str, list[int]], batch: int = 8, device: str = "auto",
               retries: int = 1, workers: int | None = None, progress=None, cancel=None, notice=None,
               events=None, cpus_per_worker: float = 1.0, image_format: str = "png"):
    """:func:`viz.atlas.precompute.precompute` with its batches rendered on ``workers`` Ray actors (default: one per CPU of
    the cluster, or one per GPU with ``device`` cuda), started once there is something to render. Returns its report
    with ``workers`` (0 when nothing was left to do), ``lost_workers`` and ``requeued`` added."""
    ray = connect(address, notice=notice)
    n = workers or default_workers(ray, str(device).startswith("cuda"))
    ex = RayExecutor(lambda: start_workers(n, settings.weights, device, cpus=cpus_per_worker), device, notice, events)
    try:
        report = gallery_precompute(root, settings, layers, batch=batch, device=device, retries=retries,
                                    progress=progress, cancel=cancel, notice=notice, executor=ex,
                                    image_format=image_format)
        report.workers, report.lost_workers, report.requeued = len(ex.started), ex.lost_workers, ex.requeued
        return report
    finally:
        for a in ex.started:
            ray.kill(a)


# ------------------------------------------------------------------------------------------ examples scan
def _windows(names: list[str], already: int, every: int) -> list[list[str]]:
    """The images in the order and the windows of :func:`viz.atlas.examples.scan`: it folds its pending maps in and
    saves its state after every ``every``-th image of the corpus (``already`` were done before this run)."""
    out: list[list[str]] = [[]]
    count = already
    for name in names:
        out[-1].append(name)
        count += 1
        if count % every == 0:
            out.append([])
    return [w for w in out if w]


def _decode_window(row: dict) -> dict:
    """Ray Data task: read and decode one window's images (a broken file becomes a skip with its reason)."""

    corpus = Corpus.from_json(json.loads(row["corpus"]))
    images = []
    for index, name in json.loads(row["images"]):
        try:
            images.append((index, name, load_rgb(corpus.path(name)), ""))
        except VizError as exc:
            images.append((index, name, None, str(exc)))
    return {"window": row["window"], "payload": pickle.dumps(images, protocol=5)}


class ScanWorker:
    """Ray Data actor: holds the model and scans whole windows, each into a fresh per-layer state (top-k both
    ends, maximum, histogram), which it returns for the driver to merge."""

    def __init__(self, weights: str, device: str, layers: list[str], top: int, env: dict[str, str]):
        os.environ.update(env)
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        dev = resolve_device(device)
        self.model = load_model(weights, dev, channels_last=dev.type == "cpu")
        self.layers, self.top = layers, top

    def __call__(self, batch: dict) -> dict:
        windows, states_out, done_out, skipped_out = [], [], [], []
        for window, payload in zip(batch["window"], batch["payload"]):
            states = {n: LayerState(LAYERS[n].channels, self.top) for n in self.layers}
            batcher = Batcher(states)
            done, skipped = {}, {}
            for index, name, image, why in pickle.loads(payload):
                if image is None:
                    skipped[name] = why
                else:
                    batcher.add_image(self.model, image, index)
                    done[name] = list(image.shape[:2])
            batcher.flush()
            buf = io.BytesIO()
            torch.save({n: s.state() for n, s in states.items()}, buf)
            windows.append(int(window))
            states_out.append(zlib.compress(buf.getvalue(), 1))  # mostly-zero histograms: ~37 MB -> ~4 MB
            done_out.append(json.dumps(done))
            skipped_out.append(json.dumps(skipped))
        return {"window": np.array(windows), "state": np.array(states_out, dtype=object),
                "done": np.array(done_out, dtype=object), "skipped": np.array(skipped_out, dtype=object)}


class _Weights:
    """What :func:`viz.atlas.examples.write_results` needs of a model: its weights' name and hash (no network here)."""

    def __init__(self, weights):
        self.weights = weights
        self.weights_name = weights.name


def scan(address: str, weights: str | None, corpus, out, layers: list[str] | None = None, top: int | None = None,
         device: str = "auto", workers: int | None = None, progress=None, notice=None):
    """:func:`viz.atlas.examples.scan` as a Ray Data pipeline (read and decode: tasks; the scan: ``workers`` actors that
    hold the model; the merge: here, window after window in corpus order). Resumable like the one-process scan
    (same checkpoint, so either can finish what the other began); same results."""

    connect(address, notice=notice)
    import ray
    import ray.data  # noqa: F401 (ray.data.from_items below)

    top = ex.TOP if top is None else top
    layers = [get_layer(n).name for n in (layers or LAYER_NAMES)]
    model = _Weights(load_weights(weights, notice=notice))
    corpus = ex.own_corpus(out, model.weights_name, corpus, notice)
    d = ex.examples_dir(out, model.weights_name, corpus.name)
    d.mkdir(parents=True, exist_ok=True)
    states = {n: ex.LayerState(LAYERS[n].channels, top) for n in layers}
    report = ex.ScanReport(out=d)
    done = ex.load_checkpoint(d, model, corpus, layers, top, states, report, notice)
    todo = [n for n in corpus.images if n not in done and n not in report.skipped]
    index = {name: i for i, name in enumerate(corpus.images)}
    windows = _windows(todo, len(corpus.images) - len(todo), ex.CHECKPOINT_EVERY)
    total, count = len(corpus.images), len(corpus.images) - len(todo)
    if windows:
        n = workers or default_workers(ray, str(device).startswith("cuda"))
        corpus_json = json.dumps(corpus.to_json())
        rows = [{"window": k, "corpus": corpus_json, "images": json.dumps([[index[name], name] for name in w])}
                for k, w in enumerate(windows)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map(_decode_window, num_cpus=0)  # light; the scan actors hold the cores
        ds = ds.map_batches(ScanWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=n), num_cpus=1,
                            num_gpus=1 if str(device).startswith("cuda") else 0,
                            fn_constructor_kwargs={"weights": model.weights_name, "device": device,
                                                   "layers": layers, "top": top, "env": worker_env()})
        waiting: dict[int, dict] = {}
        following = 0
        try:
            for row in ds.iter_rows():
                waiting[int(row["window"])] = row
                while following in waiting:  # merged in corpus order: the same sequence as one process
                    row = waiting.pop(following)
                    parts = torch.load(io.BytesIO(zlib.decompress(row["state"])), map_location="cpu",
                                       weights_only=True)
                    for n_, st in states.items():
                        part = ex.LayerState(st.channels, top)
                        part.load(parts[n_])
                        merge_states(st, part)
                    done.update(json.loads(row["done"]))
                    report.new += len(json.loads(row["done"]))
                    report.skipped.update(json.loads(row["skipped"]))
                    for name, why in json.loads(row["skipped"]).items():
                        if notice:
                            notice(f"skipped {name[:80]}: {why}")
                    count += len(windows[following])
                    following += 1
                    ex.save_checkpoint(d, model, corpus, layers, top, states, done, report)
                    if progress:
                        progress(count, total, windows[following - 1][-1][-40:])
        except VizError:
            raise
        except Exception as exc:
            raise task_error(exc, "the examples scan") from None
    report.images, report.seconds = len(done), report.elapsed()
    ex.write_results(d, corpus, model, states, done, report, top)
    ex.save_checkpoint(d, model, corpus, layers, top, states, done, report, finished=True)
    return report
