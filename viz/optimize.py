"""The one optimization loop: ``optimize(model, param, objective, transforms, ...)``.

It returns the whole per-step, per-image objective history, calls back every N steps (progress, live preview)
and stops cleanly between steps when cancelled, keeping what it has made so far.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .objectives import Objective
from .param import Parameterization
from .transforms import BatchRNG, Transform


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class StepInfo:
    """What a callback sees: ``step`` steps are done out of ``steps``."""

    step: int
    steps: int
    activation: np.ndarray  # (B,) objective activation at this step
    history: np.ndarray  # (step, B) so far
    elapsed: float
    param: Parameterization

    @property
    def eta(self) -> float:
        return self.elapsed / max(self.step, 1) * (self.steps - self.step)

    def images(self) -> np.ndarray:
        """The current images as uint8 (B, H, W, 3): a live preview."""
        with torch.no_grad():
            return to_uint8(self.param.full_image())


@dataclass
class OptimizeResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1], on CPU
    history: np.ndarray  # (steps_done, B) float32
    steps_done: int
    cancelled: bool
    seconds: float


Cancel = threading.Event | Callable[[], bool] | None


def _is_cancelled(cancel: Cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def octave_starts(octaves: Sequence[tuple[float, float]], steps: int) -> dict[int, float]:
    """``{step: scale}`` where each octave begins (the final image is always rendered at full scale)."""
    starts: dict[int, float] = {}
    for frac, scale in octaves:
        starts[min(steps - 1, max(0, round(frac * steps)))] = float(scale)
    return starts


def autocast_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimize(
    model: nn.Module,
    param: Parameterization,
    objective: Objective,
    transforms: Transform | None,
    rng: BatchRNG,
    steps: int,
    lr: float,
    precision: str = "fp32",
    channels_last: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    every: int = 1,
    cancel: Cancel = None,
    octaves: Sequence[tuple[float, float]] = (),
) -> OptimizeResult:
    """Run Adam on ``param`` for ``steps`` steps, maximising ``objective(model(transforms(param())))``.

    ``octaves`` is a coarse-to-fine schedule of ``(start, scale)`` pairs: from ``start`` (a fraction of the
    steps) on, the image is rendered at ``scale`` times its side (parameterizations with ``set_scale``).
    Each octave starts a fresh Adam, so coefficients that join late do not inherit stale moment estimates.
    The network runs under bf16 autocast when ``precision == "bf16"``; the image, transforms, loss and
    optimizer stay in fp32.
    """
    device = next(model.parameters()).device
    param = param.to(device)
    starts = octave_starts(octaves, steps)
    param.set_scale(starts.get(0, 1.0))
    opt = torch.optim.Adam(param.parameters(), lr=lr)
    history: list[np.ndarray] = []
    start = time.perf_counter()
    cancelled = False
    for step in range(steps):
        if _is_cancelled(cancel):
            cancelled = True
            break
        if step in starts and step > 0:
            param.set_scale(starts[step])
            opt = torch.optim.Adam(param.parameters(), lr=lr)
        opt.zero_grad(set_to_none=True)
        x = param()
        if transforms is not None:
            x = transforms(x, rng)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            acts = model(x)
        loss, act = objective(acts)
        loss.backward()
        opt.step()
        param.after_step()
        history.append(act.float().cpu().numpy())
        if callback is not None and ((step + 1) % every == 0 or step + 1 == steps):
            callback(StepInfo(step + 1, steps, history[-1], np.stack(history), time.perf_counter() - start, param))
    with torch.no_grad():
        images = param.full_image().detach().float().cpu()
    hist = np.stack(history).astype(np.float32) if history else np.zeros((0, images.shape[0]), np.float32)
    return OptimizeResult(images, hist, len(history), cancelled, time.perf_counter() - start)
