"""``render()``: many channels of one layer in one batch, each image optimizing its own channel."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .device import resolve_device
from .errors import VizError
from .layers import get_layer
from .methods import METHODS, Method
from .model import VGGFeatures, load_model
from .objectives import channel_maps
from .optimize import Cancel, StepInfo, optimize, to_uint8
from .param import make_generators
from .settings import RenderSettings, check_channels
from .transforms import BatchRNG


@dataclass
class RenderResult:
    """Images, the per-step objective of each image, and everything needed to reproduce them."""

    settings: RenderSettings
    channels: list[int]
    images: np.ndarray  # (B, H, W, 3) uint8
    history: np.ndarray  # (steps_done, B) float32: objective activation per step
    final_activation: np.ndarray  # (B,) pre-ReLU channel mean of the final, untransformed image
    seconds: float
    steps_done: int
    cancelled: bool
    device: str
    meta: dict = field(default_factory=dict)

    def record(self, i: int) -> dict:
        """One image's JSON-ready summary."""
        return {
            **self.settings.to_dict(),
            "channel": self.channels[i],
            "final_activation": float(self.final_activation[i]),
            "steps_done": self.steps_done,
            "cancelled": self.cancelled,
            "seconds": round(self.seconds, 3),
            "device": self.device,
        }


@torch.no_grad()
def channel_activation(model: VGGFeatures, layer: str, images: torch.Tensor, channels: list[int],
                       relu: bool = False) -> np.ndarray:
    """Mean activation of image i's channel ``channels[i]`` (pre-ReLU unless ``relu``), in fp32."""
    cut = model.cut(get_layer(layer), relu=relu)
    device = next(model.parameters()).device
    acts = cut(images.to(device))
    return channel_maps(acts, torch.tensor(channels)).mean(dim=(1, 2)).float().cpu().numpy()


def render(
    settings: RenderSettings,
    channels: list[int] | int,
    device: str | torch.device = "auto",
    callback: Callable[[StepInfo], None] | None = None,
    every: int = 1,
    cancel: Cancel = None,
    notice: Callable[[str], None] | None = None,
    channels_last: bool | None = None,
    recipe: Method | None = None,
) -> RenderResult:
    """Render one image per channel of ``settings.layer`` with ``settings.method``.

    Each image's start and random transforms come from its own generator seeded by (seed, channel), so the
    same seed and settings give the same image on the same device, whatever else is in the batch.
    ``recipe`` overrides the method's recipe (the benchmark uses it to time variants of the default).
    """
    chans = check_channels(settings.layer, channels)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if channels_last is None:
        channels_last = dev.type == "cpu"
    recipe = recipe or METHODS[settings.method]
    model = load_model(settings.weights, dev, channels_last=channels_last, notice=notice)
    # the cut computes only this batch's channels at its last conv: image i reads output i
    cut = model.cut(get_layer(settings.layer), relu=settings.activation == "post", channels=chans)
    gens = make_generators(settings.seed, chans)
    param = recipe.make_param(gens, settings.size)
    start = time.perf_counter()
    out = optimize(
        cut, param, recipe.make_objective(list(range(len(chans)))), recipe.make_transforms(), BatchRNG(gens),
        settings.steps, settings.lr, precision=settings.precision, channels_last=channels_last,
        callback=callback, every=every, cancel=cancel, octaves=recipe.octaves,
    )
    final = channel_activation(model, settings.layer, out.images, chans)
    if not (np.isfinite(final).all() and np.isfinite(out.history).all()):
        raise VizError(f"the render of {settings.layer} diverged: its activations became NaN or infinite "
                       f"(weights {settings.weights!r} may not be trained VGG16 weights)")
    return RenderResult(
        settings, chans, to_uint8(out.images), out.history, final, time.perf_counter() - start,
        out.steps_done, out.cancelled, str(dev),
    )
