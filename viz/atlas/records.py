"""The gallery's files: what a channel's record and a layer's manifest hold, their names, and their validation.

On disk::

    <root>/<weights>/<config>/<layer>/c0104.png     the image (or c0104.jpg: a precompute's --image-format)
    <root>/<weights>/<config>/<layer>/c0104.json    its record (the source of truth; versioned schema)
    <root>/<weights>/<config>/<layer>/manifest.json the layer's index of records (rebuilt from the records)

``config`` names the method and every setting that changes the image (e.g. ``fourier-128px-256st``).
Every file is written to a temporary name and renamed, the image before its record, and a record stores its
image's sha256: after ``kill -9`` at any moment a rerun trusts exactly the channels that are complete.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import GalleryError
from ..base.files import read_json, safe_name
from ..base.images import IMAGE_FORMATS
from ..engine.layers import get_layer
from ..engine.methods import METHODS
from ..engine.settings import RenderSettings

RECORD_SCHEMA, RECORD_VERSION = "vgg16-atlas/channel-record", 1
MANIFEST_SCHEMA, MANIFEST_VERSION = "vgg16-atlas/layer-manifest", 1
HISTORY_POINTS = 64
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
FLAGS = ("dead", "no_rise", "blank", "noise", "saturated")


def check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        shown = str(name)[:30]
        raise GalleryError(f"invalid {kind} name {shown!r}")
    return name


# What each version of a recipe changed that a visitor would see, for the note on an older gallery layer (short:
# on a phone the note sits above the grid).
RECIPE_CHANGES = {
    ("fourier", 4): "calmer colours",
    ("fourier", 5): "stronger, more robust images",
}


def recipe_note(settings: dict) -> str | None:
    """One line when a gallery layer was made by an older version of its method's recipe than today's (its
    images do not look like what a render makes now), else None. How to make the layer again is in
    docs/galleries.md (``python -m viz precompute`` into a new folder)."""
    method, version = settings.get("method"), settings.get("recipe")
    if method not in METHODS or not isinstance(version, int) or version >= METHODS[method].version:
        return None
    now = METHODS[method].version
    change = RECIPE_CHANGES.get((method, now))
    return (f"Made with {method} recipe version {version}; renders now use version {now}"
            + (f" ({change})" if change else "") + ", so a new render of a channel will differ.")


def config_name(s: RenderSettings) -> str:
    """``<method>-<size>px-<steps>st`` plus every non-default setting, so different settings never mix."""
    recipe = METHODS[s.method]
    name = f"{s.method}-{s.size}px-{s.steps}st"
    if not math.isclose(s.lr, recipe.lr):
        name += f"-lr{s.lr:g}"
    if s.seed:
        name += f"-seed{s.seed}"
    if s.activation != recipe.activation:
        name += f"-{s.activation}relu"
    if s.precision != "fp32":
        name += f"-{s.precision}"
    if s.view != "channel":  # readable, and a digest of the exact view: no two views share a name
        digest = hashlib.sha256(s.view.encode()).hexdigest()[:8]
        name += f"-{safe_name(s.view.split('(')[0])}-{digest}"
    return name


@dataclass(frozen=True)
class LayerDir:
    root: Path
    weights: str
    config: str
    layer: str

    @property
    def path(self) -> Path:
        return self.root / self.weights / self.config / self.layer

    def image(self, channel: int, fmt: str = "png") -> Path:
        return self.path / image_name(channel, fmt)

    def stored_image(self, record: dict) -> Path:
        """The image a (validated) record names: its file name was checked to be one of :func:`image_name`'s."""
        return self.path / record["image"]

    def record(self, channel: int) -> Path:
        return self.path / f"c{channel:04d}.json"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"


def image_name(channel: int, fmt: str = "png") -> str:
    return f"c{channel:04d}{IMAGE_FORMATS[fmt]}"


# ---------------------------------------------------------------------------------------------- validation
_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema": str, "version": int, "layer": str, "channel": int, "weights": str, "config": str,
    "settings": dict, "seed": int, "steps": int, "attempts": int, "image": str, "image_sha256": str,
    "final_activation": (int, float), "natural_max": (int, float, type(None)),
    "activation_ratio": (int, float, type(None)), "history": list, "history_steps": list,
    "seconds": (int, float), "device": str, "flags": list, "evidence": str, "metrics": dict, "created": str,
}


def validate_record(obj: object, layer: str | None = None, channel: int | None = None) -> dict:
    """Check a channel record against the schema; raise :class:`GalleryError` naming the first problem."""
    if not isinstance(obj, dict):
        raise GalleryError("record is not a JSON object")
    if obj.get("schema") != RECORD_SCHEMA or obj.get("version") != RECORD_VERSION:
        raise GalleryError(f"record schema {obj.get('schema')!r} v{obj.get('version')!r} is not "
                           f"{RECORD_SCHEMA} v{RECORD_VERSION}")
    for key, typ in _RECORD_FIELDS.items():
        if key not in obj:
            raise GalleryError(f"record lacks {key!r}")
        if not isinstance(obj[key], typ) or isinstance(obj[key], bool) and typ is not bool:
            raise GalleryError(f"record field {key!r} has the wrong type")
    lay = get_layer(obj["layer"])
    if layer is not None and obj["layer"] != layer:
        raise GalleryError(f"record is for layer {obj['layer']}, not {layer}")
    if not 0 <= obj["channel"] < lay.channels or (channel is not None and obj["channel"] != channel):
        raise GalleryError(f"record channel {obj['channel']} does not belong here")
    names = {image_name(obj["channel"], fmt) for fmt in IMAGE_FORMATS}
    if obj["image"] not in names or not re.fullmatch(r"[0-9a-f]{64}", obj["image_sha256"]):
        raise GalleryError("record names a wrong image file or hash")
    if len(obj["history"]) != len(obj["history_steps"]) or not all(
            isinstance(v, (int, float)) for v in obj["history"]):
        raise GalleryError("record history is malformed")
    if not math.isfinite(obj["final_activation"]) or any(f not in FLAGS for f in obj["flags"]):
        raise GalleryError("record activation or flags are invalid")
    return obj


def validate_manifest(obj: object) -> dict:
    if not isinstance(obj, dict):
        raise GalleryError("manifest is not a JSON object")
    if obj.get("schema") != MANIFEST_SCHEMA or obj.get("version") != MANIFEST_VERSION:
        raise GalleryError(f"manifest schema {obj.get('schema')!r} v{obj.get('version')!r} is not "
                           f"{MANIFEST_SCHEMA} v{MANIFEST_VERSION}")
    for key, typ in (("layer", str), ("weights", str), ("config", str), ("settings", dict), ("channels", dict)):
        if not isinstance(obj.get(key), typ):
            raise GalleryError(f"manifest field {key!r} is missing or has the wrong type")
    get_layer(obj["layer"])
    for key, rec in obj["channels"].items():
        if not re.fullmatch(r"[0-9]{1,6}", key):
            raise GalleryError(f"manifest channel key {key[:10]!r} is not a number")
        validate_record(rec, obj["layer"], int(key))
    return obj


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_valid_record(d: LayerDir, channel: int, settings: dict | None = None) -> dict | None:
    """The channel's record if it and its image are complete and intact (and match ``settings``), else None."""
    try:
        rec = validate_record(read_json(d.record(channel)), d.layer, channel)
        if settings is not None and rec["settings"] != settings:
            return None
        if sha256_hex(d.stored_image(rec).read_bytes()) != rec["image_sha256"]:
            return None
        return rec
    except (OSError, GalleryError):
        return None
