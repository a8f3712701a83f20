"""Image parameterizations: modules whose ``forward()`` returns a batch of RGB images in [0, 1].

Each image of the batch owns a ``torch.Generator`` so its start does not depend on what else is in the batch.
"""

from __future__ import annotations


import torch
from torch import nn

# Square root of the ImageNet colour correlation matrix (from Lucid), columns normalised to unit max norm.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _randn(gens: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=g) for g in gens])


def _rand(gens: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([torch.rand(shape, generator=g) for g in gens])


class Parameterization(nn.Module):
    """Base class: ``forward() -> (B, 3, H, W)`` in [0, 1]; ``after_step()`` may project the parameters."""

    def after_step(self) -> None:  # pragma: no cover - default does nothing
        pass


class PixelImage(Parameterization):
    """Raw pixels, started as faint uniform noise around mid-grey and clamped to [0, 1] after each step.

    This is the seed's naive parameterization: every pixel is free, so high frequencies dominate the gradient.
    """

    def __init__(self, gens: list[torch.Generator], size: int, low: float = 0.4, high: float = 0.6):
        super().__init__()
        self.pixels = nn.Parameter(low + (high - low) * _rand(gens, (3, size, size)))

    def forward(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def after_step(self) -> None:
        self.pixels.clamp_(0.0, 1.0)


def rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    """Spatial frequency magnitude of each coefficient of a real 2-D FFT of an h x w image."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(Parameterization):
    """Lucid's parameterization: a Fourier spectrum scaled by 1/frequency (so every frequency learns at a similar
    rate), in a decorrelated colour space, squashed by a sigmoid into [0, 1].
    """

    def __init__(self, gens: list[torch.Generator], size: int, sd: float = 0.01, decay_power: float = 1.0,
                 decorrelate: bool = True):
        super().__init__()
        self.size = size
        freqs = rfft2d_freqs(size, size)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / size) ** decay_power
        self.register_buffer("scale", scale[None, None, :, :, None])
        self.spectrum = nn.Parameter(_randn(gens, (3, *freqs.shape, 2)) * sd)
        self.decorrelate = decorrelate
        self.register_buffer("color", COLOR_CORRELATION.clone())

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex((self.scale * self.spectrum).contiguous())
        img = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho") / 4.0
        if self.decorrelate:
            img = torch.einsum("bchw,dc->bdhw", img, self.color)
        return torch.sigmoid(img)


def make_generators(seed: int, keys: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded from (seed, key) so an image is the same in any batch."""
    gens = []
    for key in keys:
        g = torch.Generator()
        g.manual_seed((seed * 1_000_003 + key * 7919 + 17) % (2**63 - 1))
        gens.append(g)
    return gens


