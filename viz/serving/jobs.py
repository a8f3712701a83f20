"""Background generation jobs for a shared server.

A :class:`JobManager` runs at most ``max_running`` renders at once (server-wide) and queues the rest in FIFO
order with a visible position. Its rules keep one visitor from breaking the server for the others:

- **Ownership.** Two visitors asking for the same render share one job; each is a *subscriber*. Cancel
  unsubscribes the caller only; the job stops once nobody is left. A visitor (session) that stops sending
  heartbeats (tab closed) is unsubscribed after ``session_timeout`` seconds.
- **Budgets, before anything runs.** Each job's time is estimated (:mod:`viz.serving.budget`); a request over
  ``max_job_seconds`` or over the memory-derived size cap is refused with one line naming the estimate and what
  fits; a request of several renders must fit as a whole. A running job is stopped at ``hard_seconds`` (its image
  so far is kept). Each visitor (a browser: all its sessions, one per tab) may have ``max_per_session`` requests
  running or queued; a new request from the same page replaces its previous one.
- **Short renders do not wait for long ones.** A job estimated at most ``short_seconds`` (and at most
  :data:`SHORT_SIZE` px) runs between a longer job's steps, which pauses meanwhile.
- **One queue for all the work.** The natural-photo reference a result is compared with comes from the dataset
  examples (:mod:`viz.atlas.examples`); weights that have none yet get them scanned inside the job (same slot, priority
  and time limit), never in a page's thread.

Finished results live in a :class:`~viz.serving.results.ResultCache` (memory LRU over a disk cache bounded by bytes).
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..atlas.examples import reference, reference_available
from ..base.errors import VizError
from ..base.images import strip
from ..engine.device import setup_threads
from ..engine.model import load_model
from ..engine.settings import RenderSettings
from ..engine.weights import cache_dir
from . import budget
from .budget import Limits, fmt_seconds
from .cluster import env_address
from .executor import LocalExecutor, RayJobExecutor  # imports no Ray: RayJobExecutor does, when it is made
from .heap import give_back
from .job import ANONYMOUS, Job, JobSpec, attribution_image
from .results import Result, ResultCache


@dataclass
class _Session:
    last_seen: float
    requests: dict[str, list[Job]] = field(default_factory=dict)  # tag -> the jobs of its latest request
    visitor: str = ""  # the browser this session (a tab) belongs to: the per-visitor limit counts all its tabs


SHORT_SIZE = 256  # a short job runs beside a paused long one: small enough that both fit in memory


class PhotoLane:
    """A visitor's photo passes (Your photo's forward pass, its groups and their gradients) run beside the render
    queue, at most ``slots`` at once server-wide: two visitors uploading at once wait for each other instead of
    doubling the memory. A pass that cannot enter within ``timeout`` seconds is refused with one line."""

    def __init__(self, slots: int = 1):
        self._free = threading.BoundedSemaphore(slots)
        self.slots = slots

    @contextlib.contextmanager
    def enter(self, timeout: float = 60.0):
        if not self._free.acquire(timeout=timeout):
            raise VizError(f"the server is busy with other visitors' photos (over {timeout:g} s): try again soon")
        try:
            yield
        finally:
            self._free.release()


class JobManager:
    def __init__(self, limits: Limits | None = None, disk_cache: Path | None = None, preview_every: int = 4,
                 session_alive: Callable[[str], bool | None] | None = None, executor=None, **overrides):
        """``overrides`` replace single :class:`Limits` fields (``max_running=2``...). ``session_alive(id)``, where
        the server can tell, says whether a session is still connected (None: cannot tell). ``executor`` renders
        the jobs (:class:`LocalExecutor` by default); one with a fixed number of ``slots`` sets ``max_running``."""
        self.executor = executor or LocalExecutor()
        self.notice: str | None = None  # what the operator should know (a Ray address that could not be reached)
        self.photo_lane = PhotoLane(1)
        self._lending = threading.local()  # a worker thread running short jobs between a long job's steps
        if self.executor.slots:
            overrides["max_running"] = self.executor.slots
        self.limits = replace(limits or Limits(), **overrides)
        self.preview_every = preview_every
        self.session_alive = session_alive
        lim = self.limits
        self.results = ResultCache(disk_cache, lim.result_cache, lim.result_memory_mb << 20, lim.result_disk_mb << 20)
        self.speed = 1.0  # this device's speed over the reference CPU, learnt from finished jobs
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()  # id -> job (bounded)
        self._active: dict[str, Job] = {}  # key -> queued or running job (shared between sessions)
        self._sessions: dict[str, _Session] = {}
        self._running = 0
        self._workers: list[threading.Thread] = []
        self._closed = False

    # ------------------------------------------------------------------------------------------- budgets
    def natural_cached(self, spec: JobSpec) -> bool:
        return reference_available(spec.settings.weights)

    def estimate(self, spec: JobSpec) -> float:
        """Predicted seconds for ``spec`` on this server (a cached result costs nothing)."""
        if self.results.get(spec.key) is not None:
            return 0.0
        return budget.estimate_seconds(spec.settings, self.speed, natural=not self.natural_cached(spec))

    def check_budget(self, spec: JobSpec) -> float:
        """The estimate, or :class:`VizError` naming it and the largest size/steps that fit."""
        s, lim = spec.settings, self.limits
        n = budget.view_images(s)
        cap = lim.cap(s)  # by method and number of images
        if s.size > cap:
            raise VizError(f"{s.size} px is more than this server renders{f' for {n} images' if n > 1 else ''} "
                           f"(at most {cap} px, from its {lim.memory_gb:g} GB memory limit shared by "
                           f"{lim.max_running} slot(s))")
        seconds = self.estimate(spec)
        if seconds > lim.max_job_seconds:
            natural = not self.natural_cached(spec)
            steps = budget.largest_steps(s, lim.max_job_seconds, self.speed, natural)
            size = budget.largest_size(s, lim.max_job_seconds, self.speed, natural, cap=s.size)
            fits = []
            if steps:
                fits.append(f"at {s.size} px at most {steps} steps")
            if size:
                fits.append(f"at {s.steps} steps at most {size} px")
            raise VizError(f"{s.layer} at {s.size} px x {s.steps} steps would take about {fmt_seconds(seconds)} "
                           f"here, over this server's limit of {fmt_seconds(lim.max_job_seconds)} per render"
                           + (f": {' or '.join(fits)}" if fits else ": choose fewer steps and a smaller size"))
        return seconds

    def check_request(self, specs: list[JobSpec]) -> float:
        """The request's estimate: each render within its own budget, and all of them together (Compare's pair,
        a view's images) within this server's limit, which is per request; else :class:`VizError`."""
        return sum(self._checked_estimates(specs).values())

    def _checked_estimates(self, specs: list[JobSpec]) -> dict[str, float]:
        """:meth:`check_request`'s estimates, by job key (a render asked twice runs once)."""
        estimates = {spec.key: self.check_budget(spec) for spec in specs}
        total = sum(estimates.values())
        if len(estimates) > 1 and total > self.limits.max_job_seconds:
            raise VizError(f"these {len(estimates)} renders would take about {fmt_seconds(total)} together here, "
                           f"over this server's limit of {fmt_seconds(self.limits.max_job_seconds)} per request: "
                           "choose fewer steps or a smaller size")
        return estimates

    # -------------------------------------------------------------------------------------------- public
    def submit(self, settings: RenderSettings, channel: int, device: str = "cpu",
               snapshot_steps: tuple[int, ...] = (), *, session: str | None = None, tag: str = "") -> Job:
        return self.submit_many([JobSpec(settings, channel, device, tuple(snapshot_steps))], session=session,
                                tag=tag)[0]

    def submit_many(self, specs: list[JobSpec], *, session: str | None = None, tag: str = "",
                    visitor: str | None = None) -> list[Job]:
        """Submit one request (one or more jobs) for ``session``; all of it is accepted or none.

        A request replaces the same session's previous request with the same ``tag`` (a page asking again).
        ``visitor`` names the browser the session (a tab) belongs to: ``max_per_session`` counts the requests of
        all its tabs (without it, each session is its own visitor)."""
        sid = ANONYMOUS if session is None else str(session)
        who = str(visitor) if visitor else sid
        checked = self._checked_estimates(specs)  # before anything is queued
        estimates = [checked[spec.key] for spec in specs]
        hits = {spec.key: self.results.get(spec.key) for spec in specs}
        with self._lock:
            if self._closed:
                raise VizError("the server is shutting down: try again in a minute")
            if sid != ANONYMOUS:
                sess = self._sessions.setdefault(sid, _Session(time.monotonic()))
                sess.last_seen, sess.visitor = time.monotonic(), who
                old = sess.requests.pop(tag, None)
                for job in old or ():
                    if job.key not in hits:  # asking again for the same render keeps it
                        self._unsubscribe(job, sid, "replaced by a newer request")
                busy = [jobs for other in self._sessions.values() if other.visitor == who
                        for jobs in other.requests.values() if any(not j.finished for j in jobs)]
                if len(busy) >= self.limits.max_per_session:
                    names = ", ".join(j.label for j in busy[0] if not j.finished)
                    raise VizError(f"you already have {len(busy)} render(s) running or queued ({names}): wait for "
                                   f"it or cancel it (this server allows {self.limits.max_per_session} per visitor)")
            new = [spec for spec in specs if hits[spec.key] is None and spec.key not in self._active]
            if len(self._queue) + len(new) > self.limits.max_queued:
                raise VizError(f"the server is busy ({len(self._queue)} generations waiting): try again in a minute")
            jobs = []
            for spec, est in zip(specs, estimates):
                hit = hits[spec.key]
                if hit is not None:
                    job = Job(uuid.uuid4().hex[:12], spec, 0.0, "done", step=len(hit.history), history=hit.history,
                              preview=hit.image, snapshots=hit.snapshots, result=hit, cached=True)
                elif spec.key in self._active:
                    job = self._active[spec.key]
                else:
                    job = Job(uuid.uuid4().hex[:12], spec, est)
                    self._active[spec.key] = job
                    self._queue.append(job)
                job.subscribers.add(sid)
                self._jobs[job.id] = job
                jobs.append(job)
            if sid != ANONYMOUS:
                self._sessions[sid].requests[tag] = jobs
            self._trim_jobs()
            self._ensure_workers()
            self._wake.notify_all()
            return jobs

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

    def cancel(self, job: Job, session: str | None = None) -> None:
        """``session`` no longer wants ``job``; it stops when nobody else does."""
        with self._lock:
            self._unsubscribe(job, ANONYMOUS if session is None else str(session), "cancelled")

    def heartbeat(self, session: str) -> None:
        """A page of ``session`` is still open (called while it shows a job)."""
        with self._lock:
            sess = self._sessions.get(str(session))
            if sess is not None:
                sess.last_seen = time.monotonic()

    def session_jobs(self, session: str) -> list[Job]:
        """The unfinished jobs ``session`` is waiting for."""
        with self._lock:
            sess = self._sessions.get(str(session))
            jobs = [j for jobs in sess.requests.values() for j in jobs] if sess else []
            return [j for j in jobs if not j.finished and str(session) in j.subscribers]

    def stats(self) -> dict:
        with self._lock:
            return {"running": self._running, "queued": len(self._queue), "cached": len(self.results),
                    "max_running": self.limits.max_running, "max_queued": self.limits.max_queued,
                    "sessions": len(self._sessions)}

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel everything and wait up to ``timeout`` seconds for the workers to end (tests, server stop)."""
        with self._lock:
            self._closed = True
            for job in list(self._active.values()):
                job.stopped = "the server is shutting down"
                job.cancel_event.set()
            while self._queue:
                self._finish_queued(self._queue.popleft())
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        self.executor.shutdown()

    # ------------------------------------------------------------------------------------- ownership
    def _unsubscribe(self, job: Job, sid: str, why: str) -> None:
        """Drop ``sid`` from ``job`` (lock held); nobody left: a queued job leaves the queue, a running one stops."""
        job.subscribers.discard(sid)
        if job.subscribers or job.finished:
            return
        job.stopped = "nobody is waiting for it any more" if why != "cancelled" else "cancelled"
        job.cancel_event.set()
        if job in self._queue:
            self._queue.remove(job)
            self._finish_queued(job)

    def _finish_queued(self, job: Job) -> None:
        job.state = "cancelled"
        self._active.pop(job.key, None)

    def _reap(self) -> None:
        """Unsubscribe sessions that have not been seen for ``session_timeout`` seconds (lock held). A session is
        seen when one of its pages sends a heartbeat, or when ``session_alive`` says it is still connected."""
        now = time.monotonic()
        for sid, sess in list(self._sessions.items()):
            if self.session_alive is not None and self.session_alive(sid):
                sess.last_seen = now
            if now - sess.last_seen > self.limits.session_timeout:
                for job in [j for jobs in sess.requests.values() for j in jobs if not j.finished]:
                    self._unsubscribe(job, sid, "gone")
                del self._sessions[sid]

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                if self._closed:
                    return
                try:
                    self._reap()
                except Exception:  # a probe that fails must not end the watcher
                    traceback.print_exc(file=sys.stderr)

    # ------------------------------------------------------------------------------------------- workers
    def _ensure_workers(self) -> None:
        if not self._workers:
            watcher = threading.Thread(target=self._watch, name="viz-job-watch", daemon=True)
            watcher.start()
            self._workers.append(watcher)
        while len(self._workers) < self.limits.max_running + 1:
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
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                job.state = "running"
                self._running += 1
            self._process(job)

    def _process(self, job: Job, slot: bool = True) -> None:
        """Run a job taken from the queue to its end, and publish its state. ``slot``: it holds one of the
        ``max_running`` slots (a job run between another's steps shares that one's)."""
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
                self._running -= slot
                self._active.pop(job.key, None)
                job.state = state
            if slot:  # the memory this job freed, so that the next one peaks as in a fresh process (heap.py)
                give_back()

    def _take_short(self) -> Job | None:
        """The first queued job short enough to run between another job's steps, taken from the queue."""
        with self._lock:
            if self._closed:
                return None
            for job in self._queue:
                if job.estimate <= self.limits.short_seconds and job.settings.size <= SHORT_SIZE:
                    self._queue.remove(job)
                    job.state = "running"
                    return job
        return None

    def _lend(self, job: Job) -> Callable[[], None] | None:
        """What ``job`` runs between its steps: the queued short jobs, one after another, so that a render of a few
        seconds never waits for a long one (which pauses, its time limit and learnt speed not charged)."""
        if job.estimate <= self.limits.short_seconds or getattr(self._lending, "active", False):
            return None

        def between_steps() -> None:
            while (short := self._take_short()) is not None:
                t0 = time.monotonic()
                self._lending.active = True
                try:
                    self._process(short, slot=False)
                finally:
                    self._lending.active = False
                    job.paused += time.monotonic() - t0

        return between_steps

    def _run(self, job: Job) -> str:
        """Render the job and look up its natural-photo reference; return "done" or "cancelled" (unpublished)."""
        deadline = time.monotonic() + self.limits.hard_seconds

        def stop() -> bool:
            if time.monotonic() - job.paused > deadline and not job.cancel_event.is_set():
                job.stopped = f"stopped at this server's time limit ({fmt_seconds(self.limits.hard_seconds)})"
                job.cancel_event.set()
            return job.cancel_event.is_set()

        s = job.settings
        result = self.executor.execute(job, stop, self.preview_every, self._lend(job))
        natural = None
        if not result.cancelled and not budget.view_direction(s):  # the channel's strongest response in the bundled
            # photos (scanned once per weights); a direction is not its channel: no photo reference
            model = load_model(s.weights, job.device, channels_last=job.device == "cpu")
            natural = float(reference(model, s.layer)[job.channel])
        job.result = Result(strip(result.images), result.history[:, 0].tolist(), float(result.final_activation[0]),
                            result.seconds, natural, job.snapshots, attribution_image(result.attribution))
        job.history = job.result.history
        if result.cancelled:
            return "cancelled"
        self._learn_speed(job, result.seconds - job.paused)
        self.results.put(job.key, job.result)
        return "done"

    def _learn_speed(self, job: Job, seconds: float) -> None:
        """Correct the speed factor with a finished render's measured time (the estimates learn this device).

        Only renders whose time is mostly the network's work (over half of at least 2 reference seconds) teach it:
        a stream of tiny renders, whose time is per-step overhead the model does not scale, cannot talk the server
        into accepting a huge one. Each lesson moves the factor at most twofold."""
        reference = budget.render_seconds(job.settings)
        if seconds <= 0.5 or reference < 2.0 or budget.compute_seconds(job.settings) < 0.5 * reference:
            return
        measured = float(np.clip(reference / seconds, self.speed / 2, self.speed * 2))
        self.speed = float(np.clip(0.7 * self.speed + 0.3 * measured, 0.05, 1000.0))

    def _trim_jobs(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished]
        for j in finished[: max(0, len(self._jobs) - 4 * self.limits.result_cache)]:
            self._jobs.pop(j.id, None)


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_manager(session_alive: Callable[[str], bool | None] | None = None) -> JobManager:
    """The process-wide manager, tuned by the ``VIZ_*`` variables (:class:`viz.serving.budget.Limits`)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            notice = None
            if env_address():  # renders on Ray actors (Ray itself is imported only now)
                try:
                    executor = RayJobExecutor(address=env_address())
                except VizError as exc:  # unreachable, or Ray missing: this process renders, and says so
                    notice = f"{exc}; rendering in this process instead"
                    print(f"viz: {notice}", file=sys.stderr)
                else:
                    _manager = JobManager(Limits.from_env(), disk_cache=cache_dir() / "results",
                                          session_alive=session_alive, executor=executor)
                    return _manager
            _manager = JobManager(Limits.from_env(), disk_cache=cache_dir() / "results", session_alive=session_alive)
            _manager.notice = notice
            # generations running at once share the cores instead of each claiming all of them
            threads = max(1, setup_threads() // _manager.limits.max_running)
            torch.set_num_threads(threads)
            # the reference rates were measured with 2 threads: fewer per job start slower (then it learns)
            _manager.speed = min(1.0, threads / budget.REFERENCE_THREADS)
        return _manager


def reset_manager() -> None:
    """Shut the process-wide manager down; the next :func:`get_manager` builds a fresh one (tests)."""
    global _manager
    with _manager_lock:
        if _manager is not None:
            _manager.shutdown()
        _manager = None


def wait(job: Job, timeout: float = 300.0) -> Job:
    """Block until ``job`` finishes or ``timeout`` seconds pass (for scripts and tests)."""
    deadline = time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    return job
