"""Peers for the benchmark: other feature-visualization libraries run on the same weights, judged the same way.

Lucent (``torch-lucent``, the PyTorch port of Lucid) renders with its own default recipe: ``param.image(size)``
(Fourier-space image, decorrelated colour, sigmoid), ``transform.standard_transforms`` (12 px constant pad,
jitter 8, scale 0.9-1.1, rotation +-10 deg, jitter 4), Adam at lr 0.05 and ``objectives.channel`` (minus the
channel's mean). Two things are set so that its network sees what ours sees:

- ``preprocess=False`` and our own :class:`~viz.engine.model.Normalize` inside the wrapped model: Lucent would otherwise
  apply the torchvision ImageNet normalization, which is not what the oxford weights were trained on;
- no upsampling to 224 px: ``render_vis`` blows images under 224 px up to 224 before the network (at 224 px and
  above it does not). Both methods then optimize at the size they are judged at, with the same work per step.
  ``upsample=True`` restores Lucent's behaviour.

The wrapped network ends at the target conv and its ReLUs are not in place, so the hooked output is the pre-ReLU
map our objective reads (with torchvision's in-place ReLUs a hook on a conv sees the map after the next ReLU).

torch-lucent is a development requirement (requirements-dev.txt); without it :func:`lucent_available` is False and
the benchmark leaves the peer row out with one line saying so.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..engine.layers import get_layer
from ..engine.model import VGGFeatures

LUCENT_VERSION = "0.1.8"
LUCENT_MISSING = (f"the Lucent peer row needs torch-lucent: pip install torch-lucent=={LUCENT_VERSION} "
                  "(it is in requirements-dev.txt)")


def lucent_available() -> bool:
    return importlib.util.find_spec("lucent") is not None


def lucent_device() -> torch.device:
    """Where Lucent puts its image and transforms (fixed at its import: the first GPU if any, else the CPU)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from lucent.optvis.param.spatial import device

    return torch.device(device)


def lucent_unusable(device: torch.device) -> str | None:
    """Why the Lucent peer cannot run on ``device`` (one line), or None when it can."""
    if not lucent_available():
        return LUCENT_MISSING
    ldev = lucent_device()
    if ldev.type != device.type or (ldev.type == "cuda" and (device.index or 0) != (ldev.index or 0)):
        return f"the Lucent peer row is left out: Lucent runs on {ldev}, the benchmark on {device}"
    return None


class LucentVGG(nn.Module):
    """Our conv base up to ``layer`` as a module tree Lucent can hook: children ``normalize`` and ``features``
    (Lucent's layer names ``normalize``, ``features``, ``features_0`` ...). Shares the frozen weights of
    ``model``; input RGB in [0, 1], like a render's cut network."""

    def __init__(self, model: VGGFeatures, layer: str):
        super().__init__()
        lay = get_layer(layer)
        self.normalize = model.normalize
        self.features = nn.Sequential(*[nn.ReLU(inplace=False) if isinstance(m, nn.ReLU) else m
                                        for m in model.features[: lay.index + 1]])
        self.layer_name = f"features_{lay.index}"  # the target conv, last module: its output is pre-ReLU
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.normalize(x))


@contextmanager
def _seeded(seed: int):
    """Lucent draws its start from torch's global generator and its transforms from numpy's: seed both, and
    give the caller's states back afterwards."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)


@dataclass
class PeerResult:
    image: np.ndarray  # (H, W, 3) uint8
    seconds: float  # wall time of the whole render (start, every step, the final image)


def lucent_render(model: VGGFeatures, layer: str, channel: int, size: int, steps: int, seed: int = 0,
                  upsample: bool = False) -> PeerResult:
    """One channel rendered by Lucent's ``render_vis`` with its default recipe (see the module docstring)."""
    with warnings.catch_warnings():  # kornia 0.4 scripts functions with the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from lucent.modelzoo.util import get_model_layers
        from lucent.optvis import objectives, param, render

    net = LucentVGG(model, layer)
    assert net.layer_name in get_model_layers(net), net.layer_name
    with _seeded(seed):
        start = time.perf_counter()
        images = render.render_vis(
            net, objectives.channel(net.layer_name, int(channel)), param_f=lambda: param.image(size),
            thresholds=(steps,), preprocess=False, progress=False, show_image=False,
            # None: Lucent's own rule (images under 224 px are upsampled to 224); 0: never upsample
            fixed_image_size=None if upsample else 0,
        )
        seconds = time.perf_counter() - start
    image = np.clip(np.round(images[-1][0] * 255), 0, 255).astype(np.uint8)
    return PeerResult(image, seconds)
