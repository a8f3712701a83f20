"""Budgets for a shared server: what a job will cost, stated before it runs, and the operator's limits.

- **Time.** :func:`estimate_seconds` predicts a render's wall time from its layer, size, steps and method with
  per-layer rates measured on this project's 2-core CPU (:data:`STEP_SECONDS_128`), times a speed factor that
  the job manager corrects with finished jobs, by at most 1.3x each (a GPU is learnt over its first renders).
- **Memory.** A job's resident memory grows with its pixels: :data:`BYTES_PER_PIXEL` per method (peak RSS of the
  largest jobs run through the job manager, previews and result included), more per image for a view of several
  images (:data:`BATCH_FACTOR`), with a :data:`MEMORY_MARGIN`. :func:`max_size` derives the largest side a server
  may accept from its memory ceiling, for a method and a number of images.
- **Limits.** :class:`Limits` reads every ``VIZ_*`` variable once; a bad value is named in one log line and the
  default is used (an operator's typo never breaks a page).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace

from ..engine.layers import get_layer
from ..engine.methods import METHODS
from ..engine.optimize import octave_starts
from ..engine.settings import MIN_SIZE, RenderSettings
from ..engine.views import parse_view

# Seconds per optimization step of one image rendered at full size 128 x 128 (no octave), per layer: fp32, batch
# 1, channels_last, 2-core AMD EPYC (AVX2). Measured with `measure_step_seconds` (40 steps of the default recipe
# at 128 px per layer, minus the start-up and per-step overhead below, over the schedule's mean pixel share).
STEP_SECONDS_128 = {
    "conv1_1": 0.002, "conv1_2": 0.0045, "conv2_1": 0.0094, "conv2_2": 0.0204, "conv3_1": 0.0185,
    "conv3_2": 0.0263, "conv3_3": 0.035, "conv4_1": 0.0366, "conv4_2": 0.0426, "conv4_3": 0.056,
    "conv5_1": 0.0695, "conv5_2": 0.0727, "conv5_3": 0.0791,
}
REFERENCE_THREADS = 2  # torch threads when STEP_SECONDS_128 was measured
START_SECONDS = 0.1  # a render's set-up in a warm process (a fresh process's first render adds ~0.5 s once)
STEP_OVERHEAD = 0.004  # per step, whatever the size (transforms, optimizer, callback)
# Peak RSS growth per image pixel of the largest job a method may run (conv5_3, the deepest cut), measured through
# the job manager (render, previews, result) in a process holding what the dashboard holds (base: 956 MiB):
# fourier and maco (same image parameterization) at 944 px: 1,940 B; seed (pixels) at 944 px: 1,690 B alone, but
# up to 1,960 B at 880 px as Compare's pair (two seed jobs in turn in one request, after other jobs in the process).
BYTES_PER_PIXEL = {"fourier": 1950, "maco": 1950, "seed": 1960}
BATCH_FACTOR = 1.2  # a view of several images, per image pixel: diversity of 16 at 224 px measured 2,300 B
MEMORY_MARGIN = 1.1  # what one run's peak does not show (allocator state after other jobs, longer runs)
SERVER_BASE_GB = 1.0  # the dashboard's resident memory with torch, the model and the pages loaded
SCAN_SECONDS = 6.0  # `python -m viz examples --images bundled` (11 photos, 2 scales, 13 layers): 4.1 s here


def pixel_share(method: str, steps: int) -> float:
    """Mean share of the full image's pixels rendered per step (coarse-to-fine octaves render fewer)."""
    octaves = METHODS[method].octaves
    if not octaves:
        return 1.0

    starts = sorted(octave_starts(octaves, steps).items())
    total, scale = 0.0, 1.0
    for i, (step, scale) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else steps
        total += (end - step) * scale * scale
    return total / steps


def full_step_seconds(layer: str, size: int) -> float:
    """One full-size step at ``size`` on the reference CPU."""
    return STEP_SECONDS_128[get_layer(layer).name] * (size / 128) ** 2


def view_images(s: RenderSettings) -> int:
    """Images the settings' view renders at once (diversity and interpolations render several)."""
    return parse_view(s.view, s.layer).images_per_channel()


def view_direction(s: RenderSettings) -> str:
    """The digest of the direction the settings' view grows ("" when it grows a channel)."""
    return parse_view(s.view, s.layer).direction


def render_seconds(s: RenderSettings) -> float:
    """Reference-CPU seconds for the optimization itself (a view of N images costs N images' steps)."""
    return START_SECONDS + s.steps * STEP_OVERHEAD + compute_seconds(s)


def compute_seconds(s: RenderSettings) -> float:
    """The part of :func:`render_seconds` that is the network's work (what a device's speed scales), without the
    per-step and start-up overheads."""
    return s.steps * view_images(s) * full_step_seconds(s.layer, s.size) * pixel_share(s.method, s.steps)


def natural_seconds(layer: str, size: int) -> float:
    """Reference-CPU seconds for the natural-photo reference when the weights have none yet: one scan of the
    bundled photos, every layer at once, whatever the render's layer and size (measured: 4.1 s here)."""
    return SCAN_SECONDS


def estimate_seconds(s: RenderSettings, speed: float = 1.0, natural: bool = False) -> float:
    """Predicted wall time on a device ``speed`` times the reference CPU (with the natural pass if ``natural``)."""
    ref = render_seconds(s) + (natural_seconds(s.layer, s.size) if natural else 0.0)
    return ref / max(speed, 1e-6)


def largest_steps(s: RenderSettings, limit: float, speed: float = 1.0, natural: bool = False) -> int:
    """The most steps at ``s.size`` that fit in ``limit`` seconds (0 if none)."""
    lo, hi = 0, s.steps
    while lo < hi:  # estimates grow with the steps
        mid = (lo + hi + 1) // 2
        if estimate_seconds(_with(s, steps=mid), speed, natural) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def largest_size(s: RenderSettings, limit: float, speed: float = 1.0, natural: bool = False,
                 cap: int | None = None) -> int:
    """The largest side (a multiple of 16) at ``s.steps`` that fits in ``limit`` seconds (0 if none)."""
    best = 0
    for size in range(MIN_SIZE, (cap or s.size) + 1, 16):
        if estimate_seconds(_with(s, size=size), speed, natural) > limit:
            break
        best = size
    return best


def _with(s: RenderSettings, **kw) -> RenderSettings:
    return replace(s, **kw)


def job_bytes_per_pixel(method: str = "fourier", images: int = 1) -> float:
    """Resident bytes a job of ``images`` images by ``method`` takes per pixel of its side squared."""
    per_image = BYTES_PER_PIXEL.get(method, max(BYTES_PER_PIXEL.values()))
    return images * per_image * (BATCH_FACTOR if images > 1 else 1.0) * MEMORY_MARGIN


def max_size(memory_gb: float, slots: int, base_gb: float = SERVER_BASE_GB, method: str = "fourier",
             images: int = 1) -> int:
    """Largest image side (a multiple of 16) whose job fits, ``slots`` at once, under ``memory_gb`` resident."""
    per_job = (memory_gb - base_gb) * 1e9 / max(1, slots)
    side = int(math.sqrt(max(per_job, 0) / job_bytes_per_pixel(method, images))) // 16 * 16
    return max(MIN_SIZE, side)


def fmt_seconds(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2.5 h``: estimates for people."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------------------------- operator limits
def _log(message: str) -> None:
    print(f"viz: {message}", file=sys.stderr, flush=True)


def env_number(name: str, default: float, lo: float, hi: float, integer: bool = True) -> float:
    """``$name`` as a number in [lo, hi]; anything else is named in one log line and ``default`` is used."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
        if integer and not value.is_integer():
            raise ValueError
    except ValueError:
        _log(f"{name}={raw[:40]!r} is not a {'whole ' if integer else ''}number: using the default {default:g}")
        return default
    if not (lo <= value <= hi) or not math.isfinite(value):
        _log(f"{name}={raw[:40]!r} is outside {lo:g}-{hi:g}: using the default {default:g}")
        return default
    return int(value) if integer else value


@dataclass(frozen=True)
class Limits:
    """Everything an operator tunes for a shared server (README "Hosting" lists them)."""

    max_running: int = 1  # VIZ_MAX_RUNNING: generations at once, server-wide
    max_queued: int = 16  # VIZ_MAX_QUEUED: waiting generations before new ones are refused
    max_per_session: int = 1  # VIZ_MAX_PER_SESSION: a visitor's requests running or queued at once
    max_job_seconds: float = 120.0  # VIZ_MAX_JOB_SECONDS: refuse jobs estimated longer than this
    hard_factor: float = 2.0  # VIZ_HARD_LIMIT_FACTOR: stop a job after this times VIZ_MAX_JOB_SECONDS
    memory_gb: float = 2.5  # VIZ_MEMORY_GB: resident memory ceiling the size cap is derived from
    result_cache: int = 64  # VIZ_RESULT_CACHE: finished results kept in memory
    result_memory_mb: int = 256  # VIZ_RESULT_MEMORY_MB: ... and their bytes at most
    result_disk_mb: int = 512  # VIZ_RESULT_DISK_MB: disk cache of results, least recently used evicted first
    session_timeout: float = 10.0  # VIZ_SESSION_TIMEOUT: seconds without a heartbeat before a visitor is gone
    short_seconds: float = 10.0  # VIZ_SHORT_SECONDS: renders estimated at most this run between a longer one's steps

    @classmethod
    def from_env(cls) -> "Limits":
        d = cls()
        return cls(
            max_running=int(env_number("VIZ_MAX_RUNNING", d.max_running, 1, 64)),
            max_queued=int(env_number("VIZ_MAX_QUEUED", d.max_queued, 1, 10_000)),
            max_per_session=int(env_number("VIZ_MAX_PER_SESSION", d.max_per_session, 1, 100)),
            max_job_seconds=env_number("VIZ_MAX_JOB_SECONDS", d.max_job_seconds, 1, 7 * 86400, integer=False),
            hard_factor=env_number("VIZ_HARD_LIMIT_FACTOR", d.hard_factor, 1, 100, integer=False),
            memory_gb=env_number("VIZ_MEMORY_GB", d.memory_gb, 1.2, 4096, integer=False),
            result_cache=int(env_number("VIZ_RESULT_CACHE", d.result_cache, 1, 100_000)),
            result_memory_mb=int(env_number("VIZ_RESULT_MEMORY_MB", d.result_memory_mb, 1, 1_000_000)),
            result_disk_mb=int(env_number("VIZ_RESULT_DISK_MB", d.result_disk_mb, 0, 10_000_000)),
            session_timeout=env_number("VIZ_SESSION_TIMEOUT", d.session_timeout, 1, 3600, integer=False),
            short_seconds=env_number("VIZ_SHORT_SECONDS", d.short_seconds, 0, 3600, integer=False),
        )

    @property
    def size_cap(self) -> int:
        """The largest side of a one-image render by the default recipe (other methods and views: :meth:`cap`)."""
        return max_size(self.memory_gb, self.max_running)

    def side_cap(self, method: str, images: int = 1) -> int:
        """The largest side this server accepts for ``method`` rendering ``images`` images at once (at most 1024)."""
        return min(max_size(self.memory_gb, self.max_running, method=method, images=images), 1024)

    def cap(self, s: RenderSettings) -> int:
        """The largest side this server accepts for ``s``'s method and number of images (at most 1024)."""
        return self.side_cap(s.method, view_images(s))

    @property
    def hard_seconds(self) -> float:
        return self.max_job_seconds * self.hard_factor
