"""Objectives: ``objective(acts) -> (loss, activation)`` where ``acts`` is the cut network's output
(B, C, h, w), ``loss`` a scalar to minimise and ``activation`` the per-image value recorded in the history.

Every image of the batch optimizes its own channel; the loss is a sum over images, so images do not interact.
"""

from __future__ import annotations

import torch


class Objective:
    def __call__(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def channel_maps(acts: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h, w): image i's map of channel ``channels[i]``."""
    return acts[torch.arange(acts.shape[0], device=acts.device), channels.to(acts.device)]


class ChannelMean(Objective):
    """Maximise the mean of each image's channel map."""

    def __init__(self, channels: list[int]):
        self.channels = torch.tensor(channels)

    def __call__(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = channel_maps(acts, self.channels).float().mean(dim=(1, 2))
        return -act.sum(), act.detach()


class SeedMSE(Objective):
    """The seed write-up's objective: MSE between the channel map and a map filled with the square of its
    current maximum (an unreachable target). On a post-ReLU map that is all zero the target is zero too,
    so the gradient vanishes and the image never leaves its starting noise: the baseline's blank squares.
    """

    def __init__(self, channels: list[int]):
        self.channels = torch.tensor(channels)

    def __call__(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = channel_maps(acts, self.channels).float()
        target = maps.detach().amax(dim=(1, 2), keepdim=True) ** 2
        loss = ((maps - target) ** 2).mean(dim=(1, 2)).sum()
        return loss, maps.detach().mean(dim=(1, 2))
