"""Background generation jobs for a shared server.

A :class:`JobManager` runs at most ``max_running`` renders at once (server-wide), queues the rest in FIFO order
with a visible position, refuses new work past ``max_queued`` with a one-line message, lets each session cancel
its own job (the partial image is kept), and keeps finished results in a bounded LRU (memory) backed by a disk
cache, so asking for the same render again is instant.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import VizError
from .images import atomic_write, png_bytes
from .optimize import StepInfo
from .settings import RenderSettings
from .weights import cache_dir


@dataclass
class Job:
    """One render of one channel; fields are updated by the worker thread while it runs."""

    id: str
    key: str
    settings: RenderSettings
    channel: int
    device: str
    snapshot_steps: tuple[int, ...] = ()
    state: str = "queued"  # queued, running, done, cancelled, error
    step: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    history: list[float] = field(default_factory=list)
    preview: np.ndarray | None = None
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    image: np.ndarray | None = None
    final_activation: float | None = None
    seconds: float | None = None
    error: str | None = None
    cached: bool = False
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "error")

    @property
    def steps(self) -> int:
        return self.settings.steps


def job_key(settings: RenderSettings, channel: int, device: str, snapshot_steps: tuple[int, ...] = ()) -> str:
    blob = json.dumps([settings.to_dict(), channel, device, list(snapshot_steps)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class JobManager:
    def __init__(self, max_running: int = 1, max_queued: int = 16, cache_size: int = 64,
                 disk_cache: Path | None = None, preview_every: int = 4):
        self.max_running, self.max_queued, self.cache_size = max_running, max_queued, cache_size
        self.preview_every = preview_every
        self.disk_cache = disk_cache
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._active: dict[str, Job] = {}  # key -> queued or running job (shared between sessions)
        self._done: collections.OrderedDict[str, Job] = collections.OrderedDict()  # key -> finished job (LRU)
        self._running = 0
        self._workers: list[threading.Thread] = []

    # -------------------------------------------------------------------------------------------- public
    def submit(self, settings: RenderSettings, channel: int, device: str = "cpu",
               snapshot_steps: tuple[int, ...] = ()) -> Job:
        key = job_key(settings, channel, device, snapshot_steps)
        with self._lock:
            hit = self._done.get(key)
            if hit is not None:
                self._done.move_to_end(key)
                self._jobs[hit.id] = hit  # findable by id again, even after _trim_jobs
                return hit
            if key in self._active:
                return self._active[key]
            job = Job(uuid.uuid4().hex[:12], key, settings, channel, device, tuple(sorted(snapshot_steps)))
            if self._load_disk(job):
                self._remember(job)
                self._jobs[job.id] = job
                self._trim_jobs()
                return job
            if len(self._queue) >= self.max_queued:
                raise VizError(f"the server is busy ({len(self._queue)} generations waiting): try again in a minute")
            self._jobs[job.id] = job
            self._active[key] = job
            self._queue.append(job)
            self._trim_jobs()
            self._ensure_workers()
            self._wake.notify()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id) if isinstance(job_id, str) else None

    def position(self, job: Job) -> int:
        """0 while running or finished; n >= 1 for the n-th job waiting in the queue."""
        with self._lock:
            for i, queued in enumerate(self._queue):
                if queued is job:
                    return i + 1
            return 0

    def cancel(self, job: Job) -> None:
        job.cancel_event.set()
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                job.state = "cancelled"
                self._active.pop(job.key, None)

    def stats(self) -> dict:
        with self._lock:
            return {"running": self._running, "queued": len(self._queue), "cached": len(self._done),
                    "max_running": self.max_running, "max_queued": self.max_queued}

    # ------------------------------------------------------------------------------------------- workers
    def _ensure_workers(self) -> None:
        while len(self._workers) < self.max_running:
            t = threading.Thread(target=self._work, name=f"viz-job-{len(self._workers)}", daemon=True)
            self._workers.append(t)
            t.start()

    def _work(self) -> None:
        # Generations yield the CPU to the web server: a lower priority (nice 10) for this thread and the compute
        # threads it starts, so page loads and health checks stay quick while the cores are busy.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):  # not Linux, or not permitted
            pass
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                job = self._queue.popleft()
                job.state = "running"
                self._running += 1
            state = "error"
            try:
                state = self._run(job)
            except VizError as exc:
                job.error = str(exc)
            except Exception as exc:  # never kill the worker; the user sees one line, the log the traceback
                traceback.print_exc(file=sys.stderr)
                job.error = f"generation failed ({type(exc).__name__}): {str(exc)[:120]}"
            finally:
                # the terminal state is published last, once the result is cached on disk and in memory,
                # so whoever sees "done" can also find the result from any manager
                with self._lock:
                    self._running -= 1
                    self._active.pop(job.key, None)
                    if state == "done":
                        self._remember(job)
                    job.state = state

    def _run(self, job: Job) -> str:
        """Render the job; return its terminal state ("done" or "cancelled") without publishing it."""
        from .render import render

        snaps = set(job.snapshot_steps)

        def cb(info: StepInfo) -> None:
            job.step, job.elapsed, job.eta = info.step, info.elapsed, info.eta
            job.history = info.history[:, 0].tolist()
            if info.step in snaps or info.step % self.preview_every == 0 or info.step == info.steps:
                img = info.images()[0]
                job.preview = img
                if info.step in snaps:
                    job.snapshots[info.step] = img

        result = render(job.settings, [job.channel], job.device, callback=cb, every=1, cancel=job.cancel_event)
        job.image = result.images[0]
        job.history = result.history[:, 0].tolist()
        job.final_activation = float(result.final_activation[0])
        job.seconds = result.seconds
        if result.cancelled:
            return "cancelled"
        self._save_disk(job)
        return "done"

    # --------------------------------------------------------------------------------------------- cache
    def _remember(self, job: Job) -> None:
        self._done[job.key] = job
        self._done.move_to_end(job.key)
        while len(self._done) > self.cache_size:
            self._done.popitem(last=False)

    def _trim_jobs(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished]
        for j in finished[: max(0, len(self._jobs) - 4 * self.cache_size)]:
            self._jobs.pop(j.id, None)

    def _paths(self, key: str) -> tuple[Path, Path] | None:
        if self.disk_cache is None:
            return None
        return self.disk_cache / f"{key}.png", self.disk_cache / f"{key}.json"

    def _save_disk(self, job: Job) -> None:
        paths = self._paths(job.key)
        if paths is None or job.image is None:
            return
        try:
            atomic_write(paths[0], png_bytes(job.image))
            meta = {"history": job.history, "final_activation": job.final_activation, "seconds": job.seconds,
                    "snapshots": {str(k): png_bytes(v).hex() for k, v in job.snapshots.items()}}
            atomic_write(paths[1], json.dumps(meta).encode())
        except OSError as exc:
            print(f"viz: could not cache a result on disk: {exc}", file=sys.stderr)

    def _load_disk(self, job: Job) -> bool:
        paths = self._paths(job.key)
        if paths is None or not paths[1].is_file():
            return False
        try:
            from io import BytesIO

            from PIL import Image

            meta = json.loads(paths[1].read_text())
            with Image.open(paths[0]) as im:
                job.image = np.asarray(im.convert("RGB"))
            job.snapshots = {int(k): np.asarray(Image.open(BytesIO(bytes.fromhex(v))).convert("RGB"))
                             for k, v in meta.get("snapshots", {}).items()}
            job.history = [float(v) for v in meta["history"]]
            job.final_activation = float(meta["final_activation"])
            job.seconds = float(meta["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        job.step, job.state, job.cached, job.preview = len(job.history), "done", True, job.image
        return True


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> JobManager:
    """The process-wide manager (``VIZ_MAX_RUNNING``, ``VIZ_MAX_QUEUED``, ``VIZ_RESULT_CACHE`` tune it)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = JobManager(
                max_running=max(1, int(os.environ.get("VIZ_MAX_RUNNING", "1"))),
                max_queued=max(1, int(os.environ.get("VIZ_MAX_QUEUED", "16"))),
                cache_size=max(1, int(os.environ.get("VIZ_RESULT_CACHE", "64"))),
                disk_cache=cache_dir() / "results",
            )
            # generations running at once share the cores instead of each claiming all of them
            from .device import setup_threads

            torch.set_num_threads(max(1, setup_threads() // _manager.max_running))
        return _manager


def wait(job: Job, timeout: float = 300.0) -> Job:
    """Block until ``job`` finishes (for scripts and tests)."""
    deadline = time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    return job
