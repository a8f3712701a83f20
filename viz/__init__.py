"""VGG16 Feature Atlas engine: activation maximization for every channel of VGG16's conv layers.

No Streamlit here; the dashboard and the CLI (``python -m viz``) both call this package.
"""

from .errors import VizError
from .layers import LAYER_NAMES, LAYERS, Layer, get_layer, parse_channel, parse_channels
from .methods import DEFAULT_METHOD, METHODS
from .render import RenderResult, channel_activation, render
from .settings import RenderSettings, make_settings

__all__ = [
    "VizError", "LAYER_NAMES", "LAYERS", "Layer", "get_layer", "parse_channel", "parse_channels",
    "DEFAULT_METHOD", "METHODS", "RenderResult", "channel_activation", "render", "RenderSettings", "make_settings",
]
