"""How a job is rendered: in the manager's worker thread (:class:`LocalExecutor`) or on Ray actors
(:class:`RayJobExecutor`, which imports Ray only when it is made)."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable

from ..base.errors import VizError
from ..base.images import strip
from ..engine.optimize import StepInfo
from ..engine.render import RenderResult, render
from ..engine.settings import parse_float
from .cluster import ENV_CPUS, ENV_DEVICE, connect, default_workers, env_address, ray_module, start_workers, task_error
from .job import Job


class LocalExecutor:
    """Renders a job in the calling worker thread (the default executor of :class:`viz.serving.jobs.JobManager`).

    An executor runs one job at a time per slot: :meth:`execute` renders ``job`` until it ends or ``stop()`` says so,
    keeping the job's step, ETA, curve, preview (every ``preview_every`` steps) and snapshots up to date, and returns
    the :class:`~viz.engine.render.RenderResult`. ``slots`` is how many jobs it can run at once (None: as many as
    the manager's ``max_running``). :class:`RayJobExecutor` renders on Ray actors instead (and
    lends no time to short jobs)."""

    slots: int | None = None

    def execute(self, job: Job, stop: Callable[[], bool], preview_every: int,
                between_steps: Callable[[], None] | None = None) -> RenderResult:
        """``between_steps()`` runs after every step: the manager lends the thread to short jobs there."""
        snaps = set(job.spec.snapshot_steps)

        def cb(info: StepInfo) -> None:
            job.step, job.elapsed, job.eta = info.step, info.elapsed, info.eta
            job.history.append(float(info.activation[0]))
            if info.step in snaps or info.step % preview_every == 0 or info.step == info.steps:
                img = strip(info.images())
                job.preview = img
                if info.step in snaps:
                    job.snapshots[info.step] = img
            if between_steps is not None and info.step < info.steps:
                between_steps()

        return render(job.settings, [job.channel], job.device, callback=cb, every=1, cancel=stop,
                      start=job.spec.start_image(), direction=job.spec.direction_vector())

    def shutdown(self) -> None:
        """Nothing to release: the worker threads are the manager's."""


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

        ray = ray_module()
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
                    raise task_error(exc, f"rendering {job.label}") from None
                if cancelled:
                    actor.forget.remote(key)
                return result
        finally:
            self._release(actor)

    def shutdown(self) -> None:
        """Called once the manager has cancelled every job (each running :meth:`execute` tells its actor within
        ``poll``): the actors this executor started end."""
        if self._own_actors:
            ray = ray_module()
            for actor in self.actors:
                ray.kill(actor)
