"""Scale out on Ray: gallery precompute, dataset-example scans and the app's renders on a cluster.

All of the project's Ray code lives here, and Ray is imported only by the functions below (``import viz`` and the
CLI never import it). One switch turns it on: ``--ray ADDRESS|local`` on the CLI, ``VIZ_RAY_ADDRESS`` for the app.
``local`` starts a Ray cluster inside this process (one worker per core unless told otherwise); an address
(``ray://head:10001`` or ``head:6379``) joins a running one, whose workers get this ``viz`` package shipped to them
(``py_modules``) and need the same Python packages (``requirements.txt`` + ``requirements-cluster.txt``).

- :func:`precompute`: the channels of a gallery spread over :class:`RenderWorker` actors (each holds the model) as
  batches; the driver writes every record and manifest exactly as :func:`viz.atlas.precompute.precompute` does in one
  process (it *is* that function, with :class:`RayExecutor` rendering the batches). A worker that dies mid-batch
  loses only that batch: it is rendered again on the others and the run finishes.
- :func:`scan`: :func:`viz.atlas.examples.scan` as a Ray Data pipeline: windows of the corpus are read and decoded by
  tasks, scanned by actors that hold the model (each window into its own per-channel top-k and histogram), and
  the windows are merged in corpus order on the driver, giving the same results as the scan in one process.
- :class:`RayJobExecutor`: the executor of the app's :class:`viz.serving.jobs.JobManager` when its renders run on
  Ray actors; ownership, budgets, queue positions, cancel and the time limit stay the manager's; progress and
  previews are polled from the actor while it renders.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import threading
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..atlas import examples as ex
from ..atlas.examples import Batcher, LayerState
from ..atlas.extremes import merge_states
from ..atlas.precompute import precompute as gallery_precompute
from ..base.corpus import Corpus, load_rgb
from ..base.errors import VizError
from ..base.images import strip
from ..engine.device import resolve_device
from ..engine.layers import LAYER_NAMES, LAYERS, get_layer
from ..engine.model import load_model
from ..engine.render import RenderResult, render
from ..engine.settings import parse_float, parse_int
from ..engine.weights import cache_dir, load_weights

ENV_ADDRESS = "VIZ_RAY_ADDRESS"
ENV_WORKERS = "VIZ_RAY_WORKERS"
ENV_DEVICE = "VIZ_RAY_DEVICE"
ENV_CPUS = "VIZ_RAY_CPUS"
CONNECT_SECONDS = 10.0  # how long an address may take to answer before it is called unreachable
_connect_lock = threading.Lock()
_started_here = False


def env_address() -> str | None:
    """``VIZ_RAY_ADDRESS``, or None when unset or empty (then everything runs in-process)."""
    value = os.environ.get(ENV_ADDRESS, "").strip()
    return value or None


def _ray():
    try:
        import ray
    except ImportError:
        raise VizError("Ray is not installed: pip install -r requirements-cluster.txt (or leave --ray / "
                       f"{ENV_ADDRESS} unset to run in this process)") from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """One TCP connection to the head named by ``address`` (``ray://host:port`` or ``host:port``) within ``timeout``
    seconds, or :class:`VizError`: Ray itself would wait for an unreachable head for minutes."""
    host_port = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__).lower()
        raise VizError(f"cannot reach the Ray cluster at {address[:60]!r}: {why} within {timeout:g} s") from None


def connect(address: str, num_cpus: int | None = None, notice: Callable[[str], None] | None = None):
    """Join the cluster at ``address`` (``local``: start one in this process); idempotent. Returns ``ray``."""
    global _started_here
    ray = _ray()
    if address != "local" and not ray.is_initialized():
        check_reachable(address)
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # a head that does not answer: one line, not a log
    with _connect_lock:
        if ray.is_initialized():
            return ray
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                  logging_level="ERROR")
        try:
            if address == "local":
                # workers are started from this process: they inherit its environment and its sys.path
                ray.init(num_cpus=num_cpus, **kw)
            else:  # the workers get this copy of the package
                ray.init(address=address, runtime_env={"py_modules": [str(Path(__file__).resolve().parents[1])]}, **kw)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError from a bad address...
            raise VizError(f"cannot reach the Ray cluster at {address[:60]!r}: {str(exc).splitlines()[0][:120]}"
                           ) from None
        _started_here = True
        if notice:
            res = ray.cluster_resources()
            notice(f"Ray cluster {address}: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
    return ray


def shutdown() -> None:
    """Leave (or stop, when started here) the Ray cluster this process joined."""
    global _started_here
    if _started_here:
        import ray

        ray.shutdown()
        _started_here = False


def _worker_env() -> dict[str, str]:
    """Environment for the workers: this process's cache directory (tests and a local cluster share it)."""
    return {"VIZ_CACHE_DIR": str(cache_dir())}


def default_workers(ray, gpu: bool) -> int:
    if os.environ.get(ENV_WORKERS, "").strip():
        return parse_int(ENV_WORKERS, os.environ[ENV_WORKERS], 1, 1024)
    res = ray.cluster_resources()
    return max(1, int(res.get("GPU", 0) if gpu else res.get("CPU", 1)))


# ------------------------------------------------------------------------------------------------ the actor
class RenderWorker:
    """A Ray actor holding the model; renders batches of channels. Threaded (``max_concurrency``): ``progress``
    and ``cancel`` answer while ``render`` runs. Each render is named by a ``key`` the caller chooses."""

    def __init__(self, env: dict[str, str] | None = None):
        os.environ.update(env or {})

        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)  # Ray sets it to the actor's CPUs
        if threads > 0:
            torch.set_num_threads(threads)
        self._cancel: dict[str, threading.Event] = {}
        self._progress: dict[str, dict] = {}

    def ready(self, weights: str | None, device: str) -> int:
        """Load the model now (not inside the first render); return this worker's process id."""
        dev = resolve_device(device)
        load_model(weights, dev, channels_last=dev.type == "cpu")
        return os.getpid()

    def render(self, key: str, settings, channels: list[int], device: str, every: int = 1,
               preview_every: int = 0, snapshot_steps: tuple[int, ...] = (), start=None, direction=None):
        """:func:`viz.engine.render.render` here; with ``preview_every``, keep the latest preview for :meth:`progress`."""
        stop = self._cancel.setdefault(key, threading.Event())
        prog = self._progress[key] = {"step": 0, "elapsed": 0.0, "eta": None, "history": [], "preview": None,
                                      "snapshots": {}}
        snaps = set(snapshot_steps)

        def cb(info) -> None:
            prog["step"], prog["elapsed"], prog["eta"] = info.step, info.elapsed, info.eta
            prog["history"].append([float(a) for a in info.activation])
            if preview_every and (info.step in snaps or info.step % preview_every == 0 or info.step == info.steps):
                img = strip(info.images())  # a view's images side by side, as the local executor shows them
                prog["preview"] = img
                if info.step in snaps:
                    prog["snapshots"][info.step] = img

        try:
            extra = {} if start is None else {"start": start}  # a view that starts from a photo
            if direction is not None:  # a view that grows a direction
                extra["direction"] = direction
            return render(settings, channels, device, callback=cb, every=every, cancel=stop.is_set, **extra)
        finally:
            self._cancel.pop(key, None)
            self._progress.pop(key, None)

    def progress(self, key: str, since: int = 0, snapshots_seen: int = 0) -> dict | None:
        """The render ``key``'s step, timing, history from ``since`` on, preview and new snapshots (None: none)."""
        prog = self._progress.get(key)
        if prog is None:
            return None
        snaps = dict(list(prog["snapshots"].items())[snapshots_seen:])
        return {"step": prog["step"], "elapsed": prog["elapsed"], "eta": prog["eta"],
                "history": prog["history"][since:], "preview": prog["preview"], "snapshots": snaps}

    def cancel(self, key: str) -> None:
        self._cancel.setdefault(key, threading.Event()).set()

    def forget(self, key: str) -> None:
        """Drop a cancel flag left by a ``cancel`` for a render that never started here."""
        self._cancel.pop(key, None)

    def pid(self) -> int:
        return os.getpid()


def start_workers(n: int, weights: str | None, device: str = "auto", cpus: float = 1.0,
                  max_restarts: int = 0) -> list:
    """``n`` :class:`RenderWorker` actors with the model loaded (one GPU each when ``device`` is cuda)."""
    ray = _ray()
    gpu = str(device).startswith("cuda")
    cls = ray.remote(RenderWorker).options(num_cpus=cpus, num_gpus=1 if gpu else 0, max_concurrency=4,
                                            max_restarts=max_restarts)
    actors = [cls.remote(_worker_env()) for _ in range(n)]
    try:
        ray.get([a.ready.remote(weights, device) for a in actors], timeout=600)
    except Exception as exc:
        for a in actors:
            ray.kill(a)
        raise _task_error(exc, "starting the Ray workers") from None
    return actors


def _task_error(exc: BaseException, what: str) -> VizError:
    """A VizError raised on a worker comes back as itself; anything else as one line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, VizError):
        return cause
    first = (str(cause or exc).strip().splitlines() or [type(exc).__name__])[-1]
    return VizError(f"{what} failed on Ray ({type(cause or exc).__name__}): {first[:160]}")


# -------------------------------------------------------------------------------------------- precompute
class RayExecutor:
    """Renders :func:`viz.atlas.precompute.precompute`'s batches on Ray actors, one batch per actor at a time, and hands
    each result back to the driver (which writes it). A batch whose actor dies is rendered again on another one;
    the run fails only when no worker is left. ``events(kind, info)`` sees ``dispatch``, ``done`` and ``lost``
    (with the actor's pid; tests kill a worker with it)."""

    def __init__(self, actors: list, device: str = "auto",
                 notice: Callable[[str], None] | None = None,
                 events: Callable[[str, dict], None] | None = None):
        self.actors = list(actors)
        self.device = device
        self.notice = notice
        self.events = events
        self.lost_workers = 0
        self.requeued = 0
        self.batches = 0
        ray = _ray()
        self.pids = dict(zip(map(id, self.actors), ray.get([a.pid.remote() for a in self.actors])))

    def _event(self, kind: str, actor, batch) -> None:
        if self.events:
            self.events(kind, {"pid": self.pids[id(actor)], "layer": batch.dir.layer, "channels": batch.channels,
                               "attempt": batch.attempt})

    def run(self, take, done, on_step, cancel=None) -> bool:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        ray = _ray()
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
                while idle and (again or True):
                    b = again.popleft() if again else take()
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
                        raise _task_error(exc, f"rendering {b.text}") from None
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
               events=None, cpus_per_worker: float = 1.0):
    """:func:`viz.atlas.precompute.precompute` with its batches rendered on ``workers`` Ray actors (default: one per CPU of
    the cluster, or one per GPU with ``device`` cuda). Returns its report with ``workers``, ``lost_workers`` and
    ``requeued`` added."""
    ray = connect(address, notice=notice)
    n = workers or default_workers(ray, str(device).startswith("cuda"))
    actors = start_workers(n, settings.weights, device, cpus=cpus_per_worker)
    try:
        ex = RayExecutor(actors, device, notice, events)
        report = gallery_precompute(root, settings, layers, batch=batch, device=device, retries=retries,
                                    progress=progress, cancel=cancel, notice=notice, executor=ex)
        report.workers, report.lost_workers, report.requeued = n, ex.lost_workers, ex.requeued
        return report
    finally:
        for a in actors:
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
                                                   "layers": layers, "top": top, "env": _worker_env()})
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
            raise _task_error(exc, "the examples scan") from None
    report.images, report.seconds = len(done), report.elapsed()
    ex.write_results(d, corpus, model, states, done, report, top)
    ex.save_checkpoint(d, model, corpus, layers, top, states, done, report, finished=True)
    return report


# ------------------------------------------------------------------------------------------- app backend
class RayJobExecutor:
    """Renders the app's jobs on Ray actors, one job per actor (``slots`` = the number of actors): the executor of
    a :class:`viz.serving.jobs.JobManager` whose renders run on a cluster. Everything that decides which job runs
    (queue, ownership, budgets, cancel, time limit, the result cache) stays the manager's; :meth:`execute` renders
    on a free actor and polls its progress (step, ETA, curve, preview, snapshots) every ``poll`` seconds."""

    def __init__(self, actors: list | None = None, address: str | None = None, workers: int | None = None,
                 device: str | None = None, poll: float = 0.1):
        address = address or env_address() or "local"
        ray = connect(address)
        self.device = device or os.environ.get(ENV_DEVICE, "").strip() or "auto"
        self._own_actors = actors is None
        if actors is None:
            n = workers or default_workers(ray, self.device.startswith("cuda"))
            cpus = os.environ.get(ENV_CPUS, "").strip()
            cpus = parse_float(ENV_CPUS, cpus, 0.0, 1024.0) if cpus else 1.0
            actors = start_workers(n, None, self.device, cpus=cpus, max_restarts=-1)
        self.actors = list(actors)
        self.slots = len(self.actors)
        self.poll = poll
        self._free: deque = deque(self.actors)
        self._free_lock = threading.Condition()

    def _acquire(self):
        with self._free_lock:
            while not self._free:
                self._free_lock.wait()
            return self._free.popleft()

    def _release(self, actor) -> None:
        with self._free_lock:
            self._free.append(actor)
            self._free_lock.notify()

    def execute(self, job, stop: Callable[[], bool], preview_every: int, between_steps=None) -> RenderResult:
        """Render ``job`` on a free actor (``between_steps`` is not called: an actor's steps are not this thread's
        to lend)."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError  # Ray: an optional extra

        ray = _ray()
        actor = self._acquire()
        try:
            for attempt in (1, 2):  # a worker that died is restarted by Ray; its job starts again once
                key = f"{job.id}-{attempt}"
                ref = actor.render.remote(key, job.settings, [job.channel], self.device, 1, preview_every,
                                          tuple(job.spec.snapshot_steps), job.spec.start_image(),
                                          job.spec.direction_vector())
                seen, cancelled = 0, False
                job.history = []
                while True:
                    ready, _ = ray.wait([ref], timeout=self.poll)
                    if stop() and not cancelled:
                        actor.cancel.remote(key)
                        cancelled = True
                    try:
                        prog = ray.get(actor.progress.remote(key, seen, len(job.snapshots)), timeout=30)
                    except (RayActorError, ActorUnavailableError):
                        prog = None
                    if prog is not None:
                        job.step, job.elapsed, job.eta = prog["step"], prog["elapsed"], prog["eta"]
                        job.history.extend(h[0] for h in prog["history"])
                        seen += len(prog["history"])
                        if prog["preview"] is not None:
                            job.preview = prog["preview"]
                        job.snapshots.update(prog["snapshots"])
                    if ready:
                        break
                try:
                    result = ray.get(ref)
                except (ActorDiedError, ActorUnavailableError, RayActorError):
                    if attempt == 2 or stop():
                        raise VizError("the Ray worker rendering this died (twice): try again") from None
                    continue
                except Exception as exc:
                    raise _task_error(exc, f"rendering {job.label}") from None
                if cancelled:
                    actor.forget.remote(key)
                return result
        finally:
            self._release(actor)

    def shutdown(self) -> None:
        """Called once the manager has cancelled every job (each running :meth:`execute` tells its actor within
        ``poll``): the actors this executor started end."""
        if self._own_actors:
            ray = _ray()
            for actor in self.actors:
                ray.kill(actor)
