"""Circuits: what a channel is built from in the conv layer below, and what it feeds in the conv layer above.

VGG16 has no branches and its max-pools never mix channels, so the connection between channel ``i`` of one conv
layer and channel ``o`` of the next is exactly one 3x3 kernel, ``W[o, i]`` (Olah et al. 2020, "Zoom In"). Two
measures rank the connections, and every ranking names its measure:

- **weight**: the kernel's sum (excitatory when positive, inhibitory when negative), its L2 norm alongside;
- **contribution**: at the channel's strongest positions in the bundled photos, the share of its pre-activation
  that each input channel supplies (the input's post-ReLU 3x3 window, after the pool where there is one, times
  the kernel), averaged over those positions: what drives the channel on real photos, not only what the weights
  allow. The photos are read once per weights into a :class:`ContributionTable` (committed for ``oxford``).

At depth 2 (weight only) the kernels are **expanded**: the linear path through both kernels, the ReLU set aside and
the max-pool taken as the average of its 2x2 window (Captum's ``extract_expanded_weights``; Olah et al. 2020,
"Visualizing Weights"), 5x5 kernels, or wider across a pool. conv1_1's inputs are the three colour planes of the
photo, with the input normalization folded into its kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..base.errors import VizError
from ..engine.layers import get_layer, parse_channel
from ..engine.model import VGGFeatures
from .contributions import TOP, contribution_table
from .wiring import INPUT, channel_name, expanded, kernels, layer_above, layer_below, pooled_before, rank

BY = ("weight", "contribution")
DIRECTIONS = ("in", "out")
MAX_TOP = 64

MEASURES = {
    ("weight", 1): "kernel sum (the 3x3 weights added up; excitatory > 0, inhibitory < 0)",
    ("weight", 2): "expanded kernel sum (the linear path through two kernels, ReLU set aside, max-pool as a 2x2 "
                   "average)",
    ("contribution", 1): "share of the pre-activation supplied at the channel's {n} strongest positions in the "
                         "bundled photos (mean)",
}


# ------------------------------------------------------------------------------------------------- a circuit
@dataclass
class Link:
    """One connection: the other channel, the measure's value and the kernel that carries it."""

    layer: str  # the other channel's layer ("input" for the colour planes)
    channel: int
    strength: float  # the ranking's measure
    weight_sum: float
    weight_norm: float
    kernel: np.ndarray  # (k, k): 3x3, or expanded
    share: float | None = None  # the contribution measure's value, where it was asked for

    @property
    def name(self) -> str:
        return channel_name(self.layer, self.channel)

    def to_json(self) -> dict:
        out = {"layer": self.layer, "channel": self.channel, "name": self.name, "strength": round(self.strength, 6),
               "weight_sum": round(self.weight_sum, 6), "weight_norm": round(self.weight_norm, 6),
               "kernel": np.round(self.kernel.astype(np.float64), 6).tolist()}
        if self.share is not None:
            out["share"] = round(self.share, 6)
        return out


@dataclass
class Circuit:
    layer: str
    channel: int
    direction: str  # "in": what builds it; "out": what it feeds
    by: str
    depth: int
    other: str  # the layer at the far end of the links
    measure: str
    excite: list[Link]
    inhibit: list[Link]
    positions: int | None = None  # contribution: the positions averaged (for "in"; per link for "out")

    def to_json(self) -> dict:
        return {"layer": self.layer, "channel": self.channel, "direction": self.direction, "by": self.by,
                "depth": self.depth, "other_layer": self.other, "measure": self.measure,
                "positions": self.positions, "excite": [lk.to_json() for lk in self.excite],
                "inhibit": [lk.to_json() for lk in self.inhibit]}


def _check(layer: object, channel: object, direction: object, by: object, depth: object, top: object):
    lay = get_layer(layer)
    ch = parse_channel(lay, channel)
    if direction not in DIRECTIONS:
        raise VizError(f"direction must be in (what builds the channel) or out (what it feeds), got {direction!r}")
    if by not in BY:
        raise VizError(f"the measure must be weight or contribution, got {str(by)[:20]!r}")
    try:
        depth = int(depth)
    except (TypeError, ValueError):
        raise VizError(f"depth must be 1 or 2, got {str(depth)[:20]!r}") from None
    if depth not in (1, 2):
        raise VizError(f"depth must be 1 or 2, got {depth}")
    try:
        top = int(top)
    except (TypeError, ValueError):
        raise VizError(f"top must be a whole number from 1 to {MAX_TOP}, got {str(top)[:20]!r}") from None
    if not 1 <= top <= MAX_TOP:
        raise VizError(f"top must be from 1 to {MAX_TOP}, got {top}")
    if depth == 2 and by == "contribution":
        raise VizError("the contribution measure goes one level at a time: use depth 1, or the weight measure "
                       "for expanded weights two levels away")
    return lay.name, ch, depth, top


def _far(layer: str, direction: str, depth: int) -> str:
    """The layer ``depth`` conv layers below (in) or above (out) ``layer`` (``input`` below conv1_1), or a
    one-line refusal."""
    here = layer
    for level in range(depth):
        if here == INPUT:
            raise VizError(f"{layer} is {level} level{'s' * (level > 1)} above the photo: there is nothing "
                           f"{depth} levels below it")
        nxt = layer_below(here) if direction == "in" else layer_above(here)
        if nxt is None and direction == "out":
            raise VizError(f"{layer} feeds no conv layer {depth} level{'s' * (depth > 1)} up (conv5_3 is the last)")
        here = INPUT if nxt is None else nxt
    return here


def circuit(model: VGGFeatures, layer: str, channel: int, direction: str = "in", by: str = "weight",
            depth: int = 1, top: int = TOP, progress: Callable[[int, int], None] | None = None,
            notice: Callable[[str], None] | None = None) -> Circuit:
    """What builds ``layer``:``channel`` (``direction="in"``) or what it feeds (``"out"``), ranked ``by`` weight or
    contribution, one or two conv layers away: the ``top`` strongest excitatory and inhibitory links."""
    layer, channel, depth, top = _check(layer, channel, direction, by, depth, top)
    other = _far(layer, direction, depth)
    positions = None
    if depth == 1:
        upper = layer if direction == "in" else layer_above(layer)
        w = kernels(model, upper)
        k = w[channel] if direction == "in" else w[:, channel]  # (n, 3, 3)
        sums, norms = k.sum((1, 2)), k.flatten(1).norm(dim=1)
        share = None
        if by == "weight":
            strength = sums
        else:
            table = contribution_table(model, progress=progress, notice=notice)
            share = torch.from_numpy(table.shares[upper][channel] if direction == "in"
                                     else table.shares[upper][:, channel].copy())
            if direction == "in":
                positions = int(table.counts[upper][channel])
                if positions == 0:
                    raise VizError(f"{layer}:{channel} is never positive in the bundled photos: the contribution "
                                   "measure has nothing to average; use the weight measure")
            else:  # next-layer channels that never fire on the photos have no shares to rank
                share = torch.where(torch.from_numpy(table.counts[upper] > 0), share, torch.zeros_like(share))
            strength = share
        measure = MEASURES[(by, 1)].format(n=table.top if by == "contribution" else TOP)
    else:
        upper = layer if direction == "in" else layer_above(layer_above(layer))
        mid = layer_below(upper)
        k2, k1 = kernels(model, upper), kernels(model, mid)
        if direction == "in":
            k = expanded(k2[channel:channel + 1], k1, pooled_before(upper), pooled_before(mid))[0]
        else:
            k = expanded(k2, k1[:, channel:channel + 1], pooled_before(upper), pooled_before(mid))[:, 0]
        sums, norms = k.sum((1, 2)), k.flatten(1).norm(dim=1)
        strength, share = sums, None
        measure = MEASURES[("weight", 2)]
    excite, inhibit = rank(strength, top)

    def link(i: int) -> Link:
        return Link(other, i, float(strength[i]), float(sums[i]), float(norms[i]), k[i].numpy(),
                    None if share is None else float(share[i]))

    return Circuit(layer, channel, direction, by, depth, other, measure, [link(i) for i in excite],
                   [link(i) for i in inhibit], positions)


# ---------------------------------------------------------------------------------------------- a neighbourhood
@dataclass(frozen=True)
class Node:
    layer: str
    channel: int
    level: int  # 0: the centre; -1, -2: below; 1: above


@dataclass(frozen=True)
class Edge:
    source: Node  # the lower end
    target: Node  # the upper end
    strength: float


def neighbourhood(model: VGGFeatures, layer: str, channel: int, by: str = "weight", below: int = 2,
                  above: int = 1, fan: int = 4, notice: Callable[[str], None] | None = None
                  ) -> tuple[list[Node], list[Edge]]:
    """A channel with ``below`` levels of what builds it and ``above`` levels of what it feeds: at each step the
    ``fan`` links of largest magnitude (both signs) by ``by``; nodes shared by two paths appear once."""
    centre = Node(get_layer(layer).name, parse_channel(get_layer(layer), channel), 0)
    nodes, edges = [centre], []
    seen = {(centre.layer, centre.channel): centre}

    def strongest(c: Circuit) -> list[Link]:
        return sorted(c.excite + c.inhibit, key=lambda lk: -abs(lk.strength))[:fan]

    def add(lk: Link, level: int) -> Node:
        key = (lk.layer, lk.channel)
        if key not in seen:
            seen[key] = Node(lk.layer, lk.channel, level)
            nodes.append(seen[key])
        return seen[key]

    frontier = [centre]
    for level in range(1, below + 1):
        nxt = []
        for node in frontier:
            if node.layer == INPUT:
                continue
            c = circuit(model, node.layer, node.channel, "in", by, 1, fan, notice=notice)
            for lk in strongest(c):
                other = add(lk, -level)
                edges.append(Edge(other, node, lk.strength))
                nxt.append(other)
        frontier = nxt
    frontier = [centre]
    for level in range(1, above + 1):
        nxt = []
        for node in frontier:
            if layer_above(node.layer) is None:
                continue
            c = circuit(model, node.layer, node.channel, "out", by, 1, fan, notice=notice)
            for lk in strongest(c):
                other = add(lk, level)
                edges.append(Edge(node, other, lk.strength))
                nxt.append(other)
        frontier = nxt
    return nodes, edges
