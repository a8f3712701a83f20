"""Validated render settings: the CLI, the gallery and the dashboard all go through :func:`make_settings`."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch

from ..base.errors import VizError
from .layers import get_layer, parse_channel
from .methods import DEFAULT_METHOD, METHODS
from .views import View, parse_view
from .weights import resolve_weights_name

MIN_SIZE, MAX_SIZE = 16, 1024  # conv5 needs 16 px to keep a 1x1 map; beyond 1024 px memory explodes
MAX_STEPS = 20_000
MAX_LR = 10.0
MAX_BATCH = 512
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_SIZE, DEFAULT_STEPS = 224, 512


@dataclass(frozen=True)
class RenderSettings:
    """Everything that determines a render (with the device): results record these."""

    layer: str
    method: str = DEFAULT_METHOD
    size: int = DEFAULT_SIZE
    steps: int = DEFAULT_STEPS
    lr: float = 0.05
    seed: int = 0
    weights: str = "oxford"
    activation: str = "pre"
    precision: str = "fp32"
    recipe: int = 1  # the method's recipe version (Method.version): results of an older recipe are stale
    view: str = "channel"  # what is rendered (viz.engine.views): its canonical description

    def to_dict(self) -> dict:
        """The settings as recorded; the default view is left out, so records made before views still match."""
        d = asdict(self)
        if d["view"] == "channel":
            del d["view"]
        return d


def parse_int(name: str, value: object, lo: int, hi: int, hint: str = "") -> int:
    """``value`` (an int, a whole float or its text) as an int in ``[lo, hi]``, or one line saying what is wrong."""
    if isinstance(value, bool):
        raise VizError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"-?[0-9]{1,40}", text):  # ASCII digits, one optional sign ('²' and '--16' are not)
            raise VizError(f"{name} must be a whole number, got {text[:20]!r}")
        value = int(text)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise VizError(f"{name} must be a whole number, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise VizError(f"{name} must be between {lo} and {hi}{hint}, got {value}")
    return value


def parse_float(name: str, value: object, lo_exclusive: float, hi: float) -> float:
    """``value`` as a finite float in ``(lo_exclusive, hi]``, or one line saying what is wrong."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise VizError(f"{name} must be a number, got {str(value)[:20]!r}") from None
    if not math.isfinite(v) or not lo_exclusive < v <= hi:
        raise VizError(f"{name} must be above {lo_exclusive:g} and at most {hi:g}, got {v:g}")
    return v


def default_precision(device: torch.device) -> str:
    """fp32 by default. bf16 autocast is opt-in (``precision="bf16"``): it is only fast where the hardware runs it
    natively (``bf16_is_fast``), and its quality there has not been measured yet; ``python -m viz bench`` adds a
    bf16 row to its quality table on such hardware, which is what may justify turning it on by default."""
    return "fp32"


def make_settings(layer: object, method: object = DEFAULT_METHOD, size: object = DEFAULT_SIZE,
                  steps: object = DEFAULT_STEPS, lr: object = None, seed: object = 0, weights: str | None = None,
                  activation: object = None, precision: object = "auto",
                  device: torch.device | None = None, view: object = "channel") -> RenderSettings:
    """Validate every user-supplied value; raise :class:`VizError` with one line on the first bad one.

    ``view`` is a :class:`~viz.engine.views.View` or its description (``channel``, ``neuron(x=0.2,y=0.5)``, ...)."""
    lay = get_layer(layer)
    parsed = parse_view(view.describe() if isinstance(view, View) else str(view), lay.name)
    view_s = parsed.describe()
    if not isinstance(method, str) or method not in METHODS:
        raise VizError(f"unknown method {str(method)[:20]!r}: choose {' or '.join(METHODS)}")
    recipe = METHODS[method]
    size_i = parse_int("size", size, MIN_SIZE, MAX_SIZE, " pixels")
    steps_i = parse_int("steps", steps, 1, MAX_STEPS)
    lr_f = recipe.lr if lr is None else parse_float("learning rate", lr, 0.0, MAX_LR)
    seed_i = parse_int("seed", seed, 0, 2**31 - 1)
    negative = parsed.kind == "negative"
    act = ("pre" if negative else recipe.activation) if activation is None else activation
    if act not in ("pre", "post"):
        raise VizError(f"activation must be 'pre' or 'post' (ReLU), got {str(act)[:20]!r}")
    if act == "post" and negative:
        raise VizError("the negative view needs pre-ReLU activations (--activation pre): after the ReLU, any image "
                       "the channel ignores scores as well as one it hates")
    if precision not in PRECISIONS:
        raise VizError(f"precision must be one of {', '.join(PRECISIONS)}, got {str(precision)[:20]!r}")
    prec = default_precision(device or torch.device("cpu")) if precision == "auto" else str(precision)
    return RenderSettings(lay.name, method, size_i, steps_i, lr_f, seed_i, resolve_weights_name(weights), str(act), prec,
                          recipe.version, view_s)


def check_channels(layer: str, channels: object) -> list[int]:
    lay = get_layer(layer)
    if isinstance(channels, (int, str)):
        channels = [channels]
    if not isinstance(channels, (list, tuple)) or not channels:
        raise VizError("give at least one channel")
    if len(channels) > MAX_BATCH:
        raise VizError(f"at most {MAX_BATCH} channels in one batch, got {len(channels)}")
    return [parse_channel(lay, c) for c in channels]
