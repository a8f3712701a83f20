"""The benchmark's configuration: what it measures at which sizes, and every target its report checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..engine.layers import LAYERS, get_layer
from ..engine.model import VGGFeatures
from ..engine.settings import make_settings

# Every target the report checks, in one place (the verdicts are computed from the run's numbers).
TARGETS = {
    "speedup_vs_baseline": 4.0,  # default recipe vs the straightforward baseline, per channel: at least
    "loop_overhead_pct": 25.0,  # render loop over the bare cut network: at most
    "examples_ratio": 0.80,  # examples scan over bare forward throughput: at least
    "factors_seconds": 2.0,  # a 224 px photo's groups (NMF, k=6) at any layer, renders aside: at most
    "peer_speed": 2.5,  # Lucent's seconds over ours, per channel: at least
    "peer_activation": 0.9,  # our median activation over the best photo, as a share of Lucent's: at least
    "peer_robust_share": 2 / 3,  # share of channels where ours is more robust than Lucent's (wide family): at least
    "peer_clipped": 0.05,  # median share of clipped pixel values, in every layer: at most
    "circuit_ms": 300.0,  # any channel's circuit, both measures, one level, on a warm server: at most
}


# ---------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class BenchConfig:
    """Sizes, steps and samples of one run: :meth:`full_run` for the report, :meth:`quick_run` for CI."""

    quick: bool
    size: int  # speed section: image side
    steps: int  # speed section: steps per timed render
    batch: int  # speed section: channels per batched render
    layers: tuple[str, ...]  # speed section
    baseline_steps: int  # per-channel comparison with the straightforward baseline
    variant_batches: tuple[int, ...]
    peak_n: int  # the machine's peak: matmul sides n and 2n, and a conv on n/64-side maps
    examples_limit: int | None  # bundled photos scanned (None: all)
    quality_layers: tuple[str, ...]
    quality_size: int
    quality_steps: int
    quality_per_layer: int
    peer_layers: tuple[str, ...]
    peer_size: int
    peer_steps: int
    peer_per_layer: int
    factors_layers: tuple[str, ...] = tuple(LAYERS)  # a photo's groups timed at these layers

    @classmethod
    def full_run(cls) -> "BenchConfig":
        every = tuple(LAYERS)
        return cls(False, 128, 4, 8, every, 48, (1, 4, 8, 16), 1536, None, every, 64, 96, 3, every, 128, 128, 3)

    @classmethod
    def quick_run(cls) -> "BenchConfig":
        few = ("conv1_1", "conv5_1")
        return cls(True, 32, 2, 2, few, 4, (1, 2), 512, 2, few, 32, 8, 2, ("conv3_1",), 32, 8, 1, few)


@dataclass
class Bench:
    """What every section needs: the configuration, the device, the model and a logger."""

    cfg: BenchConfig
    weights: str
    dev: torch.device
    model: VGGFeatures
    log: Callable[[str], None] = print
    res: dict = field(default_factory=dict)

    @property
    def channels_last(self) -> bool:
        return self.dev.type == "cpu"

    def settings(self, layer: str, method: str = "fourier", **kw):
        return make_settings(layer, method, weights=self.weights, device=self.dev, **kw)


def sample_channels(layer: str, n: int) -> list[int]:
    """``n`` channels of ``layer`` spread evenly from the first to the last (the first alone when ``n`` is 1)."""
    return [int(c) for c in np.linspace(0, get_layer(layer).channels - 1, n).round()]


TARGET_LAYER = "conv5_1"  # where the per-channel comparisons are made
PEER_METHODS = ("ours", "maco", "lucent")  # ours: the default recipe
