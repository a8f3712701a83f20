"""What an objective sees: the maps of the layers it reads, computed as cheaply as its ``reads`` allow.

:class:`Probe` runs the shared VGG16 conv base up to the deepest layer read. When one layer is read it is the cut
network (the fast path: the last conv computes only the channels read). When several are read, the modules run
one by one and each read layer's map is kept on the way up (no hooks on the shared model, which other threads use
at the same time; a kept map's ReLU runs out of place so the map stays as read).
"""

from __future__ import annotations

import torch
from torch import nn

from ..base.errors import VizError
from .layers import get_layer
from .model import VGGFeatures, select_outputs

Reads = dict[str, "frozenset[int] | None"]  # layer -> channels read (None: the whole layer)


class Activations:
    """Maps by layer, (B, C', h, w), where C' is every channel or the channels read (``index`` maps them)."""

    def __init__(self, maps: dict[str, torch.Tensor], index: dict[str, dict[int, int] | None], image: torch.Tensor):
        self.maps, self.index, self.image = maps, index, image

    @property
    def device(self) -> torch.device:
        return self.image.device

    def layer(self, name: str) -> torch.Tensor:
        if name not in self.maps:
            raise VizError(f"the objective reads {name}, which it does not declare in its reads")
        if self.index.get(name) is not None:
            raise VizError(f"{name} was computed for some channels only; declare the whole layer in reads")
        return self.maps[name]

    def channel(self, name: str, n) -> torch.Tensor:
        """(B, h, w): image i's map of channel ``n`` (one channel for all images, or one per image)."""
        if name not in self.maps:
            raise VizError(f"the objective reads {name}, which it does not declare in its reads")
        a = self.maps[name]
        idx = self.index.get(name)

        def col(c: int) -> int:
            if idx is None:
                if not 0 <= c < a.shape[1]:
                    raise VizError(f"channel {c} is out of range: {name} has channels 0 to {a.shape[1] - 1}")
                return c
            if c not in idx:
                raise VizError(f"the objective reads channel {c} of {name}, which it does not declare in its reads")
            return idx[c]

        if isinstance(n, int):
            return a[:, col(n)]
        chans = [int(c) for c in (n.tolist() if isinstance(n, torch.Tensor) else n)]
        if len(chans) != a.shape[0]:
            raise VizError(f"{len(chans)} channels for a batch of {a.shape[0]} images")
        cols = torch.tensor([col(c) for c in chans], device=a.device)
        return a[torch.arange(a.shape[0], device=a.device), cols]


class Probe(nn.Module):
    """Image (B, 3, H, W) in [0, 1] -> :class:`Activations` of the layers in ``reads``."""

    def __init__(self, base: VGGFeatures, reads: Reads, relu: bool = False):
        super().__init__()
        if not reads:
            raise VizError("the objective reads no layer of the network")
        self.layers = sorted((get_layer(n) for n in reads), key=lambda lay: lay.index)
        deepest = self.layers[-1]
        chans = reads[deepest.name]
        for name, cs in reads.items():
            bad = [c for c in (cs or ()) if not 0 <= c < get_layer(name).channels]
            if bad:
                raise VizError(f"channel {bad[0]} is out of range: {name} has channels 0 to {get_layer(name).channels - 1}")
        self.channels = sorted(chans) if chans is not None else None
        self.index = {lay.name: None for lay in self.layers}
        if self.channels is not None:
            self.index[deepest.name] = {c: i for i, c in enumerate(self.channels)}
        self.relu = relu
        self.normalize = base.normalize
        body = list(base.features[: deepest.index + 1])
        if self.channels is not None:
            body[-1] = select_outputs(body[-1], self.channels)
        self.body = nn.ModuleList(body)
        self.keep = {lay.index: lay.name for lay in self.layers}

    def forward(self, image: torch.Tensor) -> Activations:
        x = self.normalize(image)
        maps: dict[str, torch.Tensor] = {}
        kept = False
        for i, module in enumerate(self.body):
            if isinstance(module, nn.ReLU) and kept:
                x = torch.relu(x)  # out of place: the kept map stays pre-ReLU
            else:
                x = module(x)
            kept = False
            if i in self.keep:
                maps[self.keep[i]] = torch.relu(x) if self.relu else x
                kept = not self.relu
        return Activations(maps, self.index, image)
