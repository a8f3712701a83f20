"""VGG16 Feature Atlas engine: activation maximization for every channel of VGG16's conv layers.

No Streamlit here; the dashboard and the CLI (``python -m viz``) both call this package. The extension points
(objectives, parameterization pieces, transforms, the probe and the loop) are exported here; see the README's
"Engine API".
"""

from .errors import VizError
from .layers import LAYER_NAMES, LAYERS, Layer, get_layer, parse_channel, parse_channels
from .methods import DEFAULT_METHOD, METHODS, Method
from .objectives import Objective, channel, diversity, neuron, rectified, seed_mse, stay_close, wrap_objective
from .optimize import adam, optimize
from .param import (ColorDecorrelation, FFTImage, NaturalImage, Parameterization, PhaseImage, PixelImage,
                    fourier_image, maco_image, pixel_image)
from .probe import Activations, Probe
from .render import RenderResult, channel_activation, render, render_vis
from .settings import RenderSettings, make_settings
from .transforms import Compose, Jitter, Pad, RandomRotate, RandomScale, Transform, standard_transforms
from .views import View, make_view, parse_view

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
