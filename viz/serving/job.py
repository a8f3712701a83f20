"""A job: one render of one channel as asked for (:class:`JobSpec`, whose key names its result) and its life in
the queue (:class:`Job`: state, progress, result)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..base.corpus import to_rgb
from ..base.images import strip
from ..engine.settings import RenderSettings
from .results import Result

ANONYMOUS = ""  # the subscriber of a job submitted without a session (scripts, tests): never times out


@dataclass(frozen=True)
class JobSpec:
    """One render of one channel, as asked for."""

    settings: RenderSettings
    channel: int
    device: str = "cpu"
    snapshot_steps: tuple[int, ...] = ()
    start: bytes = b""  # the accent view's photo as PNG bytes (its digest is in the settings' view)
    direction: tuple[float, ...] = ()  # a direction view's vector (its digest is in the settings' view)

    @property
    def key(self) -> str:
        blob = json.dumps([self.settings.to_dict(), self.channel, self.device, sorted(self.snapshot_steps)],
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def direction_vector(self) -> np.ndarray | None:
        return np.asarray(self.direction, dtype=np.float32) if self.direction else None

    def start_image(self) -> np.ndarray | None:
        if not self.start:
            return None

        with Image.open(io.BytesIO(self.start)) as im:
            return to_rgb(im)


def attribution_image(attribution: np.ndarray | None) -> np.ndarray | None:
    """A render's attribution maps (B, H, W) in [0, 1] as one grey uint8 strip like its images, or None."""
    if attribution is None:
        return None
    grey = np.round(np.clip(attribution, 0, 1) * 255).astype(np.uint8)
    return strip(np.repeat(grey[..., None], 3, axis=-1))


@dataclass
class Job:
    """A render in the queue, running, or finished; the worker thread updates its progress fields."""

    id: str
    spec: JobSpec
    estimate: float = 0.0  # seconds, predicted before it ran
    state: str = "queued"  # queued, running, done, cancelled, error
    step: int = 0
    elapsed: float = 0.0
    paused: float = 0.0  # seconds this job's thread spent on short jobs between its steps
    eta: float | None = None
    history: list[float] = field(default_factory=list)
    preview: np.ndarray | None = None
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)  # step -> image, as they are taken
    result: Result | None = None
    error: str | None = None
    stopped: str | None = None  # why a cancelled job stopped ("time limit", "nobody is waiting for it")
    cached: bool = False
    subscribers: set[str] = field(default_factory=set)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def settings(self) -> RenderSettings:
        return self.spec.settings

    @property
    def channel(self) -> int:
        return self.spec.channel

    @property
    def device(self) -> str:
        return self.spec.device

    @property
    def steps(self) -> int:
        return self.spec.settings.steps

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "error")

    @property
    def image(self) -> np.ndarray | None:
        return None if self.result is None else self.result.image

    @property
    def label(self) -> str:
        return f"{self.settings.layer}:{self.channel} ({self.settings.method})"
