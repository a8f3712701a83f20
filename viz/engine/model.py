"""VGG16's conv base, loaded once per (weights, device), cut at a target layer ("model modifiers").

A cut network runs only the modules up to the target conv: nothing above it, no classifier. By default it
returns the conv's pre-ReLU output; ``relu=True`` returns the post-ReLU map instead. All parameters are frozen and
the modules are in eval mode, so one instance can be shared between threads (forward passes keep no state).
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from .layers import Layer
from .weights import Normalization, Weights, load_weights, notice_fallback, resolve_weights_name


class Normalize(nn.Module):
    """RGB in [0, 1] -> whatever the weights were trained on."""

    def __init__(self, norm: Normalization):
        super().__init__()
        self.order = list(norm.order)
        self.scale = norm.scale
        self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order != [0, 1, 2]:
            x = x[:, self.order]
        return (x * self.scale - self.mean) / self.std


# VGG16's conv base, configuration "D" of Simonyan & Zisserman (2014): output channels of each 3x3 conv, "M" a 2x2
# max pool. Built here as torchvision's ``make_layers(cfgs["D"])`` builds it (tests/engine/test_model_render.py
# checks the two match): importing torchvision costs every process 1.3 s (its ops import torch's compiler).
VGG16_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def build_features() -> nn.Sequential:
    """``torchvision.models.vgg16().features``: the same 31 modules at the same indices, without the classifier."""
    modules: list[nn.Module] = []
    channels = 3
    for v in VGG16_D:
        if v == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            modules += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*modules)


class VGGFeatures(nn.Module):
    """Normalization + the 31 ``features`` modules, frozen, for one weight set on one device."""

    def __init__(self, weights: Weights):
        super().__init__()
        self.weights_name = weights.name
        self.weights = weights
        self.normalize = Normalize(weights.normalization)
        self.features = build_features()
        self.features.load_state_dict({k.removeprefix("features."): v for k, v in weights.state_dict.items()})
        self.requires_grad_(False)
        self.eval()

    def cut(self, layer: Layer, relu: bool = False, channels: list[int] | None = None) -> "CutModel":
        return CutModel(self, layer, relu, channels)


class CutModel(nn.Module):
    """Image (B, 3, H, W) RGB in [0, 1] -> the target layer's map (B, C, H', W'), pre-ReLU unless ``relu``.

    With ``channels``, the target conv computes only those output channels, in that order (C = len(channels)):
    a render of a few channels skips the rest of the last conv's work.
    """

    def __init__(self, base: VGGFeatures, layer: Layer, relu: bool = False, channels: list[int] | None = None):
        super().__init__()
        self.layer = layer
        self.relu = relu
        self.weights_name = base.weights_name
        self.normalize = base.normalize
        # The shared base's ReLUs work in place; the cut ends at the conv and adds its own ReLU when asked.
        body = list(base.features[: layer.index + 1])
        if channels is not None:
            body[-1] = select_outputs(body[-1], channels)
        if relu:
            body.append(nn.ReLU(inplace=False))
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))


def select_outputs(conv: nn.Conv2d, channels: list[int]) -> nn.Conv2d:
    """A frozen copy of ``conv`` that computes only ``channels`` (same memory format and device)."""
    idx = torch.tensor(channels, device=conv.weight.device)
    channels_last = conv.weight.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # built on the meta device (no random init to throw away), then given the selected rows of the weights
    out = nn.Conv2d(conv.in_channels, len(channels), conv.kernel_size, conv.stride, conv.padding, device="meta")
    out.weight = nn.Parameter(conv.weight[idx].contiguous(memory_format=fmt), requires_grad=False)
    out.bias = nn.Parameter(conv.bias[idx], requires_grad=False)
    return out.eval()


_cache: dict[tuple[str, str, bool], VGGFeatures] = {}
_cache_lock = threading.Lock()


def load_model(weights: str | None = None, device: torch.device | str = "cpu", channels_last: bool = False,
               notice=None) -> VGGFeatures:
    """The frozen conv base for ``weights`` on ``device``, built once and shared (thread-safe)."""
    name = resolve_weights_name(weights)
    key = (name, str(device), channels_last)
    with _cache_lock:
        model = _cache.get(key)
        if model is None:
            w = load_weights(weights, notice=notice)
            model = VGGFeatures(w).to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            _cache[key] = model
        else:  # loading would have said it
            notice_fallback(weights, name, notice)
    return model
