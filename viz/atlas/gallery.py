"""Read a precomputed gallery (:mod:`viz.atlas.records`' files): cheap, validating, and never trusting a file it has
not checked."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..base.errors import GalleryError
from ..base.files import read_json
from ..engine.layers import LAYER_NAMES, get_layer
from .metrics import strength
from .records import NAME_RE, LayerDir, check_name, sha256_hex, validate_manifest, validate_record


# ---------------------------------------------------------------------------------------------------- reader
@dataclass
class LayerView:
    """One layer of one gallery: its records (validated) and any problems found while reading."""

    dir: LayerDir
    settings: dict
    records: dict[int, dict]
    problems: list[str]

    @property
    def layer(self) -> str:
        return self.dir.layer

    def channels(self, show: str = "all", order: str = "channel") -> list[int]:
        """The channels in the grid's order: ``show`` all, flagged or unflagged ones; ``order`` by channel number
        or strongest first (activation over the best photo; unbounded first, undefined last)."""
        chans = sorted(self.records)
        if show == "flagged":
            chans = [c for c in chans if self.records[c]["flags"]]
        elif show == "unflagged":
            chans = [c for c in chans if not self.records[c]["flags"]]
        if order == "strongest":
            chans.sort(key=lambda c: -strength(self.records[c]))
        return chans

    def image_bytes(self, channel: int) -> bytes | None:
        """The stored image file (PNG or JPEG) of ``channel`` if present and intact (its sha256 matches the
        record), else None."""
        rec = self.records.get(channel)
        if rec is None:
            return None
        try:
            data = self.dir.stored_image(rec).read_bytes()
        except OSError:
            return None
        if sha256_hex(data) != rec["image_sha256"] or not _decodes(data):
            return None
        return data


def _decodes(data: bytes) -> bool:
    """Whether ``data`` is a PNG or JPEG that Pillow can decode (a matching hash alone does not make junk an
    image)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ("PNG", "JPEG") or im.width * im.height > 4096 * 4096:
                return False
            im.load()
        return True
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError):
        return False


class Gallery:
    """Read-only view of a gallery root. Every name is validated against what is on disk before use, so no
    user-supplied value reaches a path unchecked."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._cache: dict[Path, tuple[float, LayerView]] = {}

    def _subdirs(self, path: Path) -> list[str]:
        try:
            return sorted(p.name for p in path.iterdir() if p.is_dir() and NAME_RE.match(p.name))
        except OSError:
            return []

    def weights(self) -> list[str]:
        return [w for w in self._subdirs(self.root) if self.configs(w)]

    def configs(self, weights: str) -> list[str]:
        if weights not in self._subdirs(self.root):
            return []
        return [c for c in self._subdirs(self.root / weights) if self.layers(weights, c)]

    def layers(self, weights: str, config: str) -> list[str]:
        if weights not in self._subdirs(self.root) or config not in self._subdirs(self.root / weights):
            return []
        present = set(self._subdirs(self.root / weights / config))
        return [name for name in LAYER_NAMES if name in present]

    def all_layers(self, weights: str) -> list[str]:
        """The layers any config of ``weights`` holds, in the network's order."""
        held = {name for c in self.configs(weights) for name in self.layers(weights, c)}
        return [name for name in LAYER_NAMES if name in held]

    def configs_with(self, weights: str, layer: str) -> list[str]:
        return [c for c in self.configs(weights) if layer in self.layers(weights, c)]

    def config_for(self, weights: str, layer: str) -> str | None:
        """The config a page shows ``layer`` from: of those holding it, the one made by the newest recipe, then the
        one with the largest images (a regenerated gallery's layers replace the old ones as each is completed,
        and the old config stays for the layers not yet redone); None when no config holds it."""
        def rank(config: str) -> tuple[int, int]:
            try:
                settings = self.layer(weights, config, layer).settings
            except GalleryError:
                return (-1, -1)
            recipe, size = settings.get("recipe"), settings.get("size")
            return (recipe if isinstance(recipe, int) else -1, size if isinstance(size, int) else -1)

        held = self.configs_with(weights, layer)
        return max(held, key=rank) if held else None

    def layer(self, weights: str, config: str, layer: str) -> LayerView:
        """Read a layer (cached until its manifest changes). Unknown names raise :class:`GalleryError`."""
        check_name("weights", weights)
        check_name("config", config)
        get_layer(layer)
        if layer not in self.layers(weights, config):
            raise GalleryError(f"no gallery for {layer} in {weights}/{config}")
        d = LayerDir(self.root, weights, config, layer)
        try:
            mtime = d.manifest.stat().st_mtime_ns
        except OSError:
            mtime = -1
        hit = self._cache.get(d.path)
        if hit and hit[0] == mtime:
            return hit[1]
        view = self._read(d)
        self._cache[d.path] = (mtime, view)
        return view

    def _read(self, d: LayerDir) -> LayerView:
        problems: list[str] = []
        try:
            manifest = validate_manifest(read_json(d.manifest))
            if manifest["layer"] != d.layer:
                raise GalleryError("manifest is for another layer")
            records = {int(k): v for k, v in manifest["channels"].items()}
            return LayerView(d, manifest["settings"], records, problems)
        except FileNotFoundError:
            problems.append(f"{d.layer}: manifest missing; read the channel records instead")
        except GalleryError as exc:
            problems.append(f"{d.layer}: {exc}; read the channel records instead")
        records = {}
        settings: dict = {}
        for path in sorted(d.path.glob("c[0-9][0-9][0-9][0-9].json")):
            ch = int(path.stem[1:])
            try:
                rec = validate_record(read_json(path), d.layer, ch)
                records[ch] = rec
                settings = settings or rec["settings"]
            except GalleryError as exc:
                problems.append(f"{d.layer} channel {ch}: {exc}")
        return LayerView(d, settings, records, problems)
