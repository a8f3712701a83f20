"""Deep links: layer / channel / weights / config from URL query parameters, validated like CLI input."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import VizError
from .layers import get_layer, parse_channel


@dataclass
class Link:
    layer: str | None = None
    channel: int | None = None
    problems: list[str] = field(default_factory=list)


def _first(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def parse_link(params: Mapping[str, object], default_layer: str | None = None) -> Link:
    """Read ``layer`` and ``channel``; bad values become one-line ``problems`` instead of exceptions."""
    link = Link(layer=default_layer)
    raw_layer = _first(params.get("layer"))
    if raw_layer is not None:
        try:
            link.layer = get_layer(raw_layer).name
        except VizError as exc:
            link.problems.append(str(exc))
    raw_channel = _first(params.get("channel"))
    if raw_channel is not None and link.layer is not None:
        try:
            link.channel = parse_channel(get_layer(link.layer), raw_channel)
        except VizError as exc:
            link.problems.append(str(exc))
    return link
