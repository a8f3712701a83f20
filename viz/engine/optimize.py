"""The one optimization loop: ``optimize(model, param, objective, transforms, rng, steps, optimizer)``.

It returns the whole per-step, per-image objective history, calls back every N steps (progress, live preview)
and stops cleanly between steps when cancelled, keeping what it has made so far.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..base.errors import VizError
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
    attribution: torch.Tensor | None = None  # (B, H, W): summed |d objective / d pixel| (MACO's transparency)


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


Optimizer = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


def adam(lr: float) -> Optimizer:
    return lambda params: torch.optim.Adam(params, lr=lr)


def optimize(
    model: nn.Module,
    param: Parameterization,
    objective: Objective,
    transforms: Transform | None,
    rng: BatchRNG,
    steps: int,
    optimizer: Optimizer,
    precision: str = "fp32",
    channels_last: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    every: int = 1,
    cancel: Cancel = None,
    octaves: Sequence[tuple[float, float]] = (),
    attribution: bool = False,
) -> OptimizeResult:
    """Maximise ``objective(model(transforms(param())))`` for ``steps`` steps (each image its own value).

    ``model`` returns :class:`~viz.engine.probe.Activations`; ``optimizer(params)`` makes a fresh optimizer (Adam by
    default, see :func:`adam`). ``octaves`` is a coarse-to-fine schedule of ``(start, scale)`` pairs: from
    ``start`` (a fraction of the steps) on, the image is rendered at ``scale`` times its side (parameterizations
    with ``set_scale``). Each octave starts a fresh optimizer, so coefficients that join late do not inherit stale
    moment estimates. The network runs under bf16 autocast when ``precision == "bf16"``; the image, transforms,
    loss and optimizer stay in fp32. With ``attribution`` the result carries MACO's transparency map: the absolute
    gradient of the objective with respect to each pixel of the untransformed image, summed over the steps (a
    coarse octave's gradient is resized to the full side) and over colour.
    """
    device = next(model.parameters()).device
    param = param.to(device)
    starts = octave_starts(octaves, steps)
    param.set_scale(starts.get(0, 1.0))
    opt = optimizer(param.parameters())
    history: np.ndarray | None = None  # (steps, B), filled row by row; callbacks see a view of the rows done
    done = 0
    start = time.perf_counter()
    cancelled = False
    attr: torch.Tensor | None = None
    if attribution:
        with torch.no_grad():
            full = param.full_image()
        attr = torch.zeros(full.shape[0], *full.shape[-2:], device=full.device)
    for step in range(steps):
        if _is_cancelled(cancel):
            cancelled = True
            break
        if step in starts and step > 0:
            param.set_scale(starts[step])
            opt = optimizer(param.parameters())
        opt.zero_grad(set_to_none=True)
        image = param()
        if attribution:
            image.retain_grad()
        x = transforms(image, rng) if transforms is not None else image
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            acts = model(x)
        acts.image = image
        value = objective(acts).float()
        if value.dim() != 1 or value.shape[0] != image.shape[0]:
            raise VizError(f"the objective {objective.description[:60]} must give one value per image "
                           f"({image.shape[0]}), it gave shape {tuple(value.shape)}")
        (-value.sum()).backward()
        if attr is not None and image.grad is not None:
            attr = _accumulate(attr, image.grad.detach())
        opt.step()
        param.after_step()
        with torch.no_grad():
            act = objective.report(acts, value.detach()).float().cpu().numpy()
        if history is None:
            history = np.zeros((steps, act.shape[0]), np.float32)
        history[step] = act
        done = step + 1
        if callback is not None and (done % every == 0 or done == steps):
            callback(StepInfo(done, steps, history[step], history[:done], time.perf_counter() - start, param))
    with torch.no_grad():
        images = param.full_image().detach().float().cpu()
    hist = history[:done].copy() if history is not None else np.zeros((0, images.shape[0]), np.float32)
    return OptimizeResult(images, hist, done, cancelled, time.perf_counter() - start,
                          None if attr is None else attr.cpu())


def _accumulate(total: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Add one step's |gradient| (B, 3, h, w), summed over colour, to the full-size total (B, H, W)."""
    g = grad.float().abs().sum(dim=1, keepdim=True)
    if g.shape[-2:] != total.shape[-2:]:  # a coarse octave: spread over the full side, the same sum
        g = F.interpolate(g, size=total.shape[-2:], mode="bilinear", align_corners=False) \
            * (g.shape[-1] / total.shape[-1]) ** 2
    return total + g[:, 0]
