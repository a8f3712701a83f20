"""``render()``: many channels of one layer in one batch, each image optimizing its own channel's view."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..base.errors import VizError
from .device import resolve_device
from .layers import get_layer
from .methods import METHODS, Method
from .model import VGGFeatures, load_model
from .objectives import Objective, as_direction
from .optimize import Cancel, Optimizer, OptimizeResult, StepInfo, adam, optimize, to_uint8
from .param import IMAGE_KEY, Parameterization, fourier_image, make_generators
from .probe import Probe
from .settings import RenderSettings, check_channels
from .transforms import BatchRNG, Transform, standard_transforms
from .views import View, parse_view, photo_digest, view_objective


@dataclass
class RenderResult:
    """Images, the per-step objective of each image, and everything needed to reproduce them.

    Image i is filed under ``channels[i]``: one image per channel, or several per channel for the views that
    make several (diversity, interpolating mixes), channel by channel."""

    settings: RenderSettings
    channels: list[int]
    images: np.ndarray  # (B, H, W, 3) uint8
    history: np.ndarray  # (steps_done, B) float32: what the objective reports per step (the channel mean by default)
    final_activation: np.ndarray  # (B,) pre-ReLU channel mean of the final, untransformed image
    seconds: float
    steps_done: int
    cancelled: bool
    device: str
    objective: str = ""  # the objective's description
    attribution: np.ndarray | None = None  # (B, H, W) float32 in [0, 1], methods that make one (MACO)

    def record(self, i: int) -> dict:
        """One image's JSON-ready summary."""
        return {
            **self.settings.to_dict(),
            "channel": self.channels[i],
            "objective": self.objective,
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


@torch.no_grad()
def direction_activation(model: VGGFeatures, layer: str, images: torch.Tensor, vector) -> np.ndarray:
    """Mean over the map of the pre-ReLU activation's dot product with the unit ``vector``, per image."""
    lay = get_layer(layer)
    v = torch.from_numpy(as_direction(vector, lay.channels))
    device = next(model.parameters()).device
    acts = model.cut(lay)(images.to(device)).float()
    return torch.einsum("bchw,c->b", acts, v.to(device)).div(acts.shape[2] * acts.shape[3]).cpu().numpy()


def channel_maps(acts: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h, w): image i's map of channel ``channels[i]``."""
    return acts[torch.arange(acts.shape[0], device=acts.device), channels.to(acts.device)]


def start_tensor(view: View, start: np.ndarray | None) -> torch.Tensor | None:
    """The accent view's start photo as (1, 3, H, W) in [0, 1], checked against the digest in the view."""
    if view.kind != "accent":
        return None
    if start is None or photo_digest(start) != view.start:
        raise VizError("the accent view's start photo is missing or is not the one its settings name")
    return torch.from_numpy(np.array(start, dtype=np.uint8)).permute(2, 0, 1)[None].float().div(255)


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
    start: np.ndarray | None = None,
    optimizer: Optimizer | None = None,
    direction: np.ndarray | None = None,
) -> RenderResult:
    """Render ``settings.view`` of each channel of ``settings.layer`` with ``settings.method``, in one batch.

    Each image's start and random transforms come from its own generator seeded by (seed, channel, image of the
    view), so the same seed and settings give the same image on the same device, whatever else is in the batch.
    ``recipe`` overrides the method's recipe (the benchmark times variants of the default); ``start`` is the
    accent view's photo (H, W, 3) uint8; ``optimizer`` replaces Adam at the settings' learning rate;
    ``direction`` the vector over the layer's channels that a direction view (or an accent with ``dir``) names.
    A direction's final activation is its own value (the dot product's mean), not its channel's.
    """
    view = parse_view(settings.view, settings.layer)
    chans = [view.primary] if view.primary is not None else check_channels(settings.layer, channels)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if channels_last is None:
        channels_last = dev.type == "cpu"
    recipe = recipe or METHODS[settings.method]
    model = load_model(settings.weights, dev, channels_last=channels_last, notice=notice)
    per = view.images_per_channel()
    each = [c for c in chans for _ in range(per)]
    photo = start_tensor(view, start)  # None unless the view is accent
    objective, filed = view_objective(view, settings.layer, chans, recipe.make_objective(settings.layer, each), photo,
                                      direction)
    probe = Probe(model, objective.reads, relu=settings.activation == "post")
    gens = make_generators(settings.seed, [c + k * IMAGE_KEY for c in chans for k in range(per)])
    param = recipe.make_param(gens, settings.size)
    if photo is not None:
        param.start_from(photo)
    begin = time.perf_counter()
    out = optimize(
        probe, param, objective, recipe.make_transforms(), BatchRNG(gens), settings.steps,
        optimizer or adam(settings.lr), precision=settings.precision, channels_last=channels_last,
        callback=callback, every=every, cancel=cancel, octaves=recipe.octaves, attribution=recipe.attribution,
    )
    if view.direction:
        final = direction_activation(model, settings.layer, out.images, direction)
    else:
        final = channel_activation(model, settings.layer, out.images, filed)
    if not (np.isfinite(final).all() and np.isfinite(out.history).all()):
        raise VizError(f"the render of {settings.layer} diverged: its activations became NaN or infinite "
                       f"(weights {settings.weights!r} may not be trained VGG16 weights)")
    return RenderResult(
        settings, filed, to_uint8(out.images), out.history, final, time.perf_counter() - begin,
        out.steps_done, out.cancelled, str(dev), objective.description, normalize_attribution(out.attribution),
    )


def normalize_attribution(attr) -> np.ndarray | None:
    """(B, H, W) summed |gradient| -> float32 in [0, 1] per image (its 99th percentile is 1: one hot pixel does
    not make the rest invisible)."""
    if attr is None:
        return None
    a = attr.float().cpu().numpy()
    top = np.percentile(a.reshape(len(a), -1), 99, axis=1)[:, None, None]
    return np.clip(a / np.maximum(top, 1e-12), 0, 1).astype(np.float32)


def render_vis(
    model: VGGFeatures | str,
    objective: Objective,
    param: Parameterization | None = None,
    optimizer: Optimizer | None = None,
    transforms: Transform | None | str = "standard",
    steps: int = 128,
    size: int = 128,
    relu: bool = False,
    seed: int = 0,
    callback: Callable[[StepInfo], None] | None = None,
    octaves: tuple[tuple[float, float], ...] = (),
) -> OptimizeResult:
    """Lucent's ``render_vis(model, objective, param, optimizer, transforms)`` for any :class:`Objective`:
    ``model`` is a conv base (or a weights name), ``param`` defaults to one :func:`~viz.engine.param.fourier_image` of
    ``size`` px, ``optimizer`` to Adam at 0.05, ``transforms`` to the default robustness stack (``None``: none).
    Returns the images (B, 3, H, W) in [0, 1] and the per-step history."""
    if isinstance(model, str):
        model = load_model(model, "cpu", channels_last=True)
    n = param().shape[0] if param is not None else 1
    gens = make_generators(seed, list(range(n)))
    param = param if param is not None else fourier_image(gens, size)
    if transforms == "standard":
        transforms = standard_transforms()
    probe = Probe(model, objective.reads, relu=relu)
    channels_last = next(model.parameters()).is_contiguous(memory_format=torch.channels_last)
    out = optimize(probe, param, objective, transforms, BatchRNG(gens), steps, optimizer or adam(0.05),
                   channels_last=channels_last, callback=callback, octaves=octaves)
    if not (np.isfinite(out.history).all() and torch.isfinite(out.images).all()):
        raise VizError(f"the render of {objective.description[:60]} diverged: its values became NaN or infinite")
    return out
