"""Deep links: layer / channel / page / size / steps / method from URL query parameters, validated like CLI input.

Every bad value becomes one line in ``problems`` (and its parameter name in ``bad``), never an exception."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..base.errors import VizError
from ..engine.layers import get_layer, parse_channel
from ..engine.methods import METHODS
from ..engine.settings import MAX_SIZE, MAX_STEPS, MIN_SIZE, parse_int

MAX_PAGE = 10_000


@dataclass
class Link:
    layer: str | None = None
    channel: int | None = None
    page: int | None = None
    size: int | None = None
    steps: int | None = None
    method: str | None = None
    problems: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # parameters to drop from the URL

    def given(self) -> dict:
        """The values the link sets (for "has the link changed since it was applied")."""
        return {k: v for k in ("layer", "channel", "page", "size", "steps", "method")
                if (v := getattr(self, k)) is not None}


def _first(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def parse_link(params: Mapping[str, object], default_layer: str | None = None,
               current_layer: str | None = None) -> Link:
    """Read the link's parameters; bad values become one-line ``problems`` instead of exceptions. A channel without
    a layer is read against ``current_layer`` (the layer the page shows), when the page has one."""
    link = Link(layer=default_layer)

    def read(name, parse):
        raw = _first(params.get(name))
        if raw is None:
            return None
        try:
            return parse(raw)
        except VizError as exc:
            link.problems.append(str(exc))
            link.bad.append(name)
            return None

    layer = read("layer", lambda raw: get_layer(raw).name)
    if layer is not None:
        link.layer = layer
    if link.layer is not None or current_layer is not None:
        link.channel = read("channel", lambda raw: parse_channel(get_layer(link.layer or current_layer), raw))
    link.page = read("page", lambda raw: parse_int("page", raw, 1, MAX_PAGE))
    link.size = read("size", lambda raw: parse_int("size", raw, MIN_SIZE, MAX_SIZE, " pixels"))
    link.steps = read("steps", lambda raw: parse_int("steps", raw, 1, MAX_STEPS))

    def method(raw):
        if raw not in METHODS:
            raise VizError(f"unknown method {str(raw)[:20]!r}: choose {' or '.join(METHODS)}")
        return raw

    link.method = read("method", method)
    return link
