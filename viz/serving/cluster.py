"""Scale out on Ray: joining a cluster, and the render actor that holds the model.

All of the project's Ray code lives in this module, :mod:`viz.serving.cluster_runs` (the gallery precompute and the
dataset-example scan on a cluster) and :class:`viz.serving.executor.RayJobExecutor` (the app's renders on Ray
actors); Ray is imported only inside their functions (``import viz`` and the CLI never import it). One switch turns
it on: ``--ray ADDRESS|local`` on the CLI, ``VIZ_RAY_ADDRESS`` for the app. ``local`` starts a Ray cluster inside
this process (one worker per core unless told otherwise); an address (``ray://head:10001`` or ``head:6379``) joins a
running one, whose workers get this ``viz`` package shipped to them (``py_modules``) and need the same Python
packages (``requirements.txt`` + ``requirements-cluster.txt``).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from ..base.errors import VizError
from ..base.images import strip
from ..engine.device import resolve_device
from ..engine.model import load_model
from ..engine.render import render
from ..engine.settings import parse_int
from ..engine.weights import cache_dir
from .heap import give_back

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


def ray_module():
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
    ray = ray_module()
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


def worker_env() -> dict[str, str]:
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
            give_back()  # what the render freed, as the server's own process does after each job (heap.py)

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
    ray = ray_module()
    gpu = str(device).startswith("cuda")
    cls = ray.remote(RenderWorker).options(num_cpus=cpus, num_gpus=1 if gpu else 0, max_concurrency=4,
                                            max_restarts=max_restarts)
    actors = [cls.remote(worker_env()) for _ in range(n)]
    try:
        ray.get([a.ready.remote(weights, device) for a in actors], timeout=600)
    except Exception as exc:
        for a in actors:
            ray.kill(a)
        raise task_error(exc, "starting the Ray workers") from None
    return actors


def task_error(exc: BaseException, what: str) -> VizError:
    """A VizError raised on a worker comes back as itself; anything else as one line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, VizError):
        return cause
    first = (str(cause or exc).strip().splitlines() or [type(exc).__name__])[-1]
    return VizError(f"{what} failed on Ray ({type(cause or exc).__name__}): {first[:160]}")
