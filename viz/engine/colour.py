"""Decorrelated colour: images are optimized in a colour basis whose channels are uncorrelated in natural
photos (the square root of ImageNet's colour correlation, as in Lucid), and mapped back to RGB."""

from __future__ import annotations

import torch
from torch import nn

_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


class ColorDecorrelation(nn.Module):
    """Decorrelated colour space -> RGB, with the square root of ImageNet's colour correlation (Lucid)."""

    def __init__(self, matrix: torch.Tensor = COLOR_CORRELATION):
        super().__init__()
        self.register_buffer("matrix", matrix.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,dc->bdhw", x, self.matrix)

    def inverse(self, rgb: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,dc->bdhw", rgb, torch.linalg.inv(self.matrix))
