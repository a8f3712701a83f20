"""The VGG16 conv layer table: names, positions in torchvision's ``features``, widths, receptive fields."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from ..base.errors import VizError

# (block, conv) -> channels, in network order. Max-pools follow the last conv of every block.
_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


@dataclass(frozen=True)
class Layer:
    """One conv layer of VGG16.

    Attributes:
        name: ``conv<block>_<n>``, e.g. ``conv5_1``.
        index: position of the conv module in ``torchvision.models.vgg16().features``.
        channels: number of output channels.
        in_channels: number of input channels.
        receptive_field: side, in input pixels, of the square of the input that one output unit sees.
        stride: input pixels between neighbouring output units.
        block: 1..5; ``keras_name`` is ``block<block>_conv<n>`` (the Keras/ONNX naming).
    """

    name: str
    index: int
    channels: int
    in_channels: int
    receptive_field: int
    stride: int
    block: int
    keras_name: str


def _build() -> dict[str, Layer]:
    table: dict[str, Layer] = {}
    index, rf, jump, in_ch = 0, 1, 1, 3
    for b, widths in enumerate(_BLOCKS, start=1):
        for n, ch in enumerate(widths, start=1):
            rf += 2 * jump  # 3x3 conv, stride 1
            table[f"conv{b}_{n}"] = Layer(f"conv{b}_{n}", index, ch, in_ch, rf, jump, b, f"block{b}_conv{n}")
            index += 2  # conv + ReLU
            in_ch = ch
        rf += jump  # 2x2 max-pool, stride 2
        jump *= 2
        index += 1
    return table


LAYERS: dict[str, Layer] = _build()
LAYER_NAMES: tuple[str, ...] = tuple(LAYERS)


def get_layer(name: object) -> Layer:
    """Return the layer called ``name``; anything else (unknown, path-like, not a string) is refused."""
    if isinstance(name, str) and name in LAYERS:
        return LAYERS[name]
    shown = repr(name) if len(repr(name)) <= 40 else repr(name)[:37] + "..."
    raise VizError(f"unknown layer {shown}: choose one of {', '.join(LAYER_NAMES)}")


def parse_channel(layer: Layer, value: object) -> int:
    """Validate one channel number (int or decimal string) for ``layer``."""
    if isinstance(value, bool):
        raise VizError(f"channel must be a whole number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[0-9]{1,6}", text):  # ASCII digits only: str.isdigit() accepts '²'
            shown = text if len(text) <= 20 else text[:17] + "..."
            raise VizError(f"channel must be a whole number from 0 to {layer.channels - 1}, got {shown!r}")
        value = int(text)
    if not isinstance(value, int):
        try:
            value = operator.index(value)  # numpy integers
        except TypeError:
            raise VizError(f"channel must be a whole number, got {type(value).__name__}") from None
    if not 0 <= value < layer.channels:
        raise VizError(f"channel {value} is out of range: {layer.name} has channels 0 to {layer.channels - 1}")
    return value


def parse_channels(layer: Layer, spec: str) -> list[int]:
    """Parse ``all``, ``0-63``, ``25,104,116`` or a mix like ``0-3,10`` into sorted unique channels."""
    spec = spec.strip()
    if spec == "all":
        return list(range(layer.channels))
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            lo_s, _, hi_s = part.partition("-")
            lo, hi = parse_channel(layer, lo_s), parse_channel(layer, hi_s)
            if hi < lo:
                raise VizError(f"channel range {part!r} is empty: write it low-high")
            out.update(range(lo, hi + 1))
        else:
            out.add(parse_channel(layer, part))
    return sorted(out)
