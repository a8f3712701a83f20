"""VGG16's wiring: which conv layer feeds which, the 3x3 kernels between them (conv1_1's with the input
normalization folded in, so its inputs are the photo's colour planes), rankings of a kernel measure, the share each
input supplies at a channel's peak, and expanded weights two layers away.

VGG16 has no branches and its max-pools never mix channels, so the connection between channel ``i`` of one conv
layer and channel ``o`` of the next is exactly one 3x3 kernel, ``W[o, i]`` (Olah et al. 2020, "Zoom In").
Expanded weights are the linear path through two kernels, the ReLU set aside and a max-pool taken as the average of
its 2x2 window (Captum's ``extract_expanded_weights``; Olah et al. 2020, "Visualizing Weights")."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.layers import LAYER_NAMES, get_layer
from ..engine.model import VGGFeatures

COLOURS = ("red", "green", "blue")
INPUT = "input"  # the "layer" of the colour planes


# ------------------------------------------------------------------------------------------------ the layers
def layer_below(layer: str) -> str | None:
    """The conv layer that feeds ``layer`` (None for conv1_1, whose inputs are the colour planes)."""
    i = LAYER_NAMES.index(get_layer(layer).name)
    return LAYER_NAMES[i - 1] if i else None


def layer_above(layer: str) -> str | None:
    """The conv layer that ``layer`` feeds (None for conv5_3, the last)."""
    i = LAYER_NAMES.index(get_layer(layer).name)
    return LAYER_NAMES[i + 1] if i + 1 < len(LAYER_NAMES) else None


def pooled_before(layer: str) -> bool:
    """Whether a 2x2 max-pool sits between ``layer`` and the conv layer below it (the first conv of blocks 2-5)."""
    lay = get_layer(layer)
    return lay.block > 1 and lay.name.endswith("_1")


def kernels(model: VGGFeatures, layer: str) -> torch.Tensor:
    """``layer``'s weights (out, in, 3, 3), float32 on the CPU. For conv1_1 the input normalization is folded in,
    so that its inputs are the photo's red, green and blue in [0, 1] (in that order)."""
    lay = get_layer(layer)
    w = model.features[lay.index].weight.detach().float().cpu()
    if lay.name != LAYER_NAMES[0]:
        return w
    norm = model.normalize
    per_input = w * (norm.scale / norm.std.detach().float().cpu().view(1, 3, 1, 1))
    rgb = torch.zeros_like(per_input)
    for j, c in enumerate(norm.order):  # normalized input j reads pixel colour c
        rgb[:, c] += per_input[:, j]
    return rgb


def channel_name(layer: str, channel: int) -> str:
    return COLOURS[channel] if layer == INPUT else f"{layer}:{channel}"


# -------------------------------------------------------------------------------------------------- rankings
def rank(strength: torch.Tensor | np.ndarray, top: int) -> tuple[list[int], list[int]]:
    """Indices of the ``top`` largest positive strengths (descending) and of the ``top`` most negative
    (ascending); zero and NaN are neither."""
    s = torch.as_tensor(np.asarray(strength, dtype=np.float64))
    order = torch.argsort(s, descending=True, stable=True).tolist()
    excite = [i for i in order if s[i] > 0][:top]
    inhibit = [i for i in reversed(order) if s[i] < 0][:top]
    return excite, inhibit


def peak_shares(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every output channel of a 3x3 conv (stride 1, padding 1): its strongest position in ``y``, the value
    there and the share of that value each input channel supplies.

    ``x``: the conv's input (in, H, W); ``y``: its pre-activation output (out, H, W); ``w``: its weights
    (out, in, 3, 3). Returns values (out,), positions (out, 2) as (row, column) and shares (out, in): the input's
    3x3 window times the kernel, over the value (the bias supplies the rest)."""
    cout, h, wd = y.shape
    values, flat = y.reshape(cout, -1).max(dim=1)
    rows, cols = flat // wd, flat % wd
    xp = F.pad(x, (1, 1, 1, 1))
    offs = torch.arange(3)
    windows = xp[:, (rows[:, None] + offs)[:, :, None], (cols[:, None] + offs)[:, None, :]]  # (in, out, 3, 3)
    contrib = torch.einsum("iokl,oikl->oi", windows, w)
    return values, torch.stack([rows, cols], 1), contrib / values[:, None]


def expanded(k2: torch.Tensor, k1: torch.Tensor, pool_between: bool = False,
             pool_below: bool = False) -> torch.Tensor:
    """Expanded weights of two stacked 3x3 convs (stride 1, padding 1): the linear map from the lower conv's
    input to the upper conv's output at one position, (out of ``k2``, in of ``k1``, S, S), the ReLU set aside and
    a max-pool taken as its 2x2 average (as Captum's ``extract_expanded_weights``). ``pool_between``: a pool
    between the two convs (S = 8); ``pool_below``: a pool before the lower conv (S = 10); neither: S = 5.

    Tap ``a`` of the upper kernel and tap ``b`` of the lower one meet at input offset ``sa * a + sb * b + e``,
    where ``sa``, ``sb`` are the input pixels per step of each kernel's grid and ``e`` runs over a pool's window."""
    sa, sb = (2 if pool_between or pool_below else 1), (2 if pool_below else 1)
    pool = pool_between or pool_below
    window = (0, 1) if pool else (0,)
    side = 2 * sa + 2 * sb + len(window)
    n_out, n_in = k2.shape[0], k1.shape[1]
    pairs = torch.einsum("oia,ikb->okab", k2.double().flatten(2), k1.double().flatten(2))  # (out, in, 9, 9)
    if pool:
        pairs = pairs / 4
    out = torch.zeros(n_out, n_in, side * side, dtype=torch.float64)
    taps = torch.arange(9)
    ay, ax, by, bx = taps[:, None] // 3, taps[:, None] % 3, taps[None] // 3, taps[None] % 3
    for ey in window:
        for ex in window:
            place = (sa * ay + sb * by + ey) * side + (sa * ax + sb * bx + ex)  # (9, 9)
            out.index_add_(2, place.flatten(), pairs.flatten(2))
    return out.view(n_out, n_in, side, side).float()
