"""VGG16 Feature Atlas engine: activation maximization for every channel of VGG16's conv layers.

No Streamlit here; the dashboard and the CLI (``python -m viz``) both call this package. The extension points
(objectives, parameterization pieces, transforms, the probe and the loop) are exported here; see the README's
"Engine API".
"""

from .base.errors import VizError
from .engine.layers import LAYER_NAMES, LAYERS, Layer, get_layer, parse_channel, parse_channels
from .engine.methods import DEFAULT_METHOD, METHODS, Method
from .engine.objectives import Objective, channel, diversity, neuron, rectified, seed_mse, stay_close, wrap_objective
from .engine.optimize import adam, optimize
from .engine.param import (
                    ColorDecorrelation,
                    FFTImage,
                    NaturalImage,
                    Parameterization,
                    PhaseImage,
                    PixelImage,
                    fourier_image,
                    maco_image,
                    pixel_image,
)
from .engine.probe import Activations, Probe
from .engine.render import RenderResult, channel_activation, render, render_vis
from .engine.settings import RenderSettings, make_settings
from .engine.transforms import Compose, Jitter, Pad, RandomRotate, RandomScale, Transform, standard_transforms
from .engine.views import View, make_view, parse_view

__all__ = [
    "VizError", "LAYER_NAMES", "LAYERS", "Layer", "get_layer", "parse_channel", "parse_channels",
    "DEFAULT_METHOD", "METHODS", "Method", "RenderResult", "channel_activation", "render", "render_vis",
    "RenderSettings", "make_settings",
    "Objective", "wrap_objective", "channel", "neuron", "rectified", "diversity", "stay_close", "seed_mse",
    "Parameterization", "NaturalImage", "FFTImage", "PhaseImage", "PixelImage", "ColorDecorrelation", "fourier_image",
    "maco_image", "pixel_image",
    "Transform", "Compose", "Jitter", "RandomScale", "RandomRotate", "Pad", "standard_transforms",
    "Activations", "Probe", "adam", "optimize", "View", "make_view", "parse_view",
]
