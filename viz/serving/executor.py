"""How a job is rendered: the in-process executor (the Ray one is :class:`viz.serving.cluster.RayJobExecutor`)."""

from __future__ import annotations

from collections.abc import Callable

from ..base.images import strip
from ..engine.optimize import StepInfo
from ..engine.render import RenderResult, render
from .job import Job


class LocalExecutor:
    """Renders a job in the calling worker thread (the default executor of :class:`viz.serving.jobs.JobManager`).

    An executor runs one job at a time per slot: :meth:`execute` renders ``job`` until it ends or ``stop()`` says so,
    keeping the job's step, ETA, curve, preview (every ``preview_every`` steps) and snapshots up to date, and returns
    the :class:`~viz.engine.render.RenderResult`. ``slots`` is how many jobs it can run at once (None: as many as
    the manager's ``max_running``). :class:`viz.serving.cluster.RayJobExecutor` renders on Ray actors instead (and
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
