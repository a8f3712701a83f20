"""Finished generator results: a memory LRU (bounded by count and bytes) over a disk cache bounded by bytes.

On disk, one result is ``<key>.json`` (history, activation, seconds, natural-photo maximum, snapshot steps, and
each PNG's length, SHA-256 and pixel size), ``<key>.png`` (the image) and ``<key>.s<step>.png`` per snapshot: PNGs,
not hex inside JSON. A file is used only if it is what the JSON says it is (length and digest checked before it is
decoded): a PNG put in a result's place is a miss, rendered again, never decoded. A hit refreshes the files'
modification time; once the cache holds more than ``disk_bytes``, the least recently used results go.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..base.files import atomic_write
from ..base.images import png_bytes

FORMAT = 3  # 1 stored snapshots as hex PNGs inside the JSON; 2 did not record what each PNG is


@dataclass
class Result:
    """What a finished render leaves behind."""

    image: np.ndarray
    history: list[float]
    final_activation: float
    seconds: float
    natural: float | None = None
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    attribution: np.ndarray | None = None  # (H, W, 3) grey uint8: where the gradient went (MACO)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.attribution is None else self.attribution.nbytes
        return int(self.image.nbytes + sum(s.nbytes for s in self.snapshots.values()) + 8 * len(self.history) + extra)


def _describe(data: bytes, image: np.ndarray) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "size": [image.shape[1], image.shape[0]]}


def _read_png(path: Path, claim: object) -> np.ndarray:
    """The PNG at ``path`` if it is the one ``claim`` describes (length, digest, pixel size), else ValueError."""
    if not isinstance(claim, dict) or not isinstance(claim.get("bytes"), int):
        raise ValueError("no description")
    if path.stat().st_size != claim["bytes"]:
        raise ValueError("length differs")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != claim.get("sha256"):
        raise ValueError("digest differs")
    with Image.open(io.BytesIO(data)) as im:
        if list(im.size) != claim.get("size"):
            raise ValueError("pixel size differs")
        return np.asarray(im.convert("RGB"))


class ResultCache:
    def __init__(self, directory: Path | None, max_items: int = 64, max_bytes: int = 256 << 20,
                 disk_bytes: int = 512 << 20):
        self.directory = directory
        self.max_items, self.max_bytes, self.disk_bytes = max_items, max_bytes, disk_bytes
        self._memory: collections.OrderedDict[str, Result] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._memory)

    # ------------------------------------------------------------------------------------------- memory
    def get(self, key: str) -> Result | None:
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
                return hit
        hit = self._load(key)
        if hit is not None:
            self._keep(key, hit)
        return hit

    def put(self, key: str, result: Result) -> None:
        self._save(key, result)
        self._keep(key, result)

    def _keep(self, key: str, result: Result) -> None:
        with self._lock:
            self._memory[key] = result
            self._memory.move_to_end(key)
            while len(self._memory) > 1 and (len(self._memory) > self.max_items or
                                             sum(r.nbytes for r in self._memory.values()) > self.max_bytes):
                self._memory.popitem(last=False)

    # --------------------------------------------------------------------------------------------- disk
    def _files(self, key: str) -> list[Path]:
        return [self.directory / f"{key}.json", self.directory / f"{key}.png", self.directory / f"{key}.a.png",
                *self.directory.glob(f"{key}.s*.png")] if self.directory else []

    def _save(self, key: str, r: Result) -> None:
        if self.directory is None or self.disk_bytes <= 0:
            return
        try:
            files = {}
            for name, image in [("png", r.image), *((f"s{step}.png", snap) for step, snap in r.snapshots.items()),
                                *([("a.png", r.attribution)] if r.attribution is not None else [])]:
                data = png_bytes(image)
                atomic_write(self.directory / f"{key}.{name}", data)
                files[name] = _describe(data, image)
            meta = {"format": FORMAT, "history": r.history, "final_activation": r.final_activation,
                    "seconds": r.seconds, "natural": r.natural, "snapshots": sorted(r.snapshots),
                    "attribution": r.attribution is not None, "files": files}
            atomic_write(self.directory / f"{key}.json", json.dumps(meta, allow_nan=False).encode())  # last
            self.evict()
        except (OSError, ValueError) as exc:
            print(f"viz: could not cache a result on disk: {exc}", file=sys.stderr)

    def _load(self, key: str) -> Result | None:
        if self.directory is None:
            return None
        meta_path = self.directory / f"{key}.json"
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                return None
            natural, files = meta.get("natural"), meta["files"]

            def png(name: str) -> np.ndarray:
                return _read_png(self.directory / f"{key}.{name}", files.get(name))

            result = Result(
                png("png"), [float(v) for v in meta["history"]], float(meta["final_activation"]),
                float(meta["seconds"]), None if natural is None else float(natural),
                {int(s): png(f"s{int(s)}.png") for s in meta["snapshots"]},
                png("a.png") if meta.get("attribution") is True else None)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, Image.DecompressionBombError):
            return None  # unreadable or hostile: rendered again and overwritten
        now = None
        for path in self._files(key):  # a hit is a use: least recently used goes first
            try:
                os.utime(path, now)
            except OSError:
                pass
        return result

    def disk_usage(self) -> int:
        if self.directory is None or not self.directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def evict(self) -> None:
        """Delete least recently used results until the directory holds at most ``disk_bytes``."""
        if self.directory is None or not self.directory.is_dir():
            return
        groups: dict[str, list[tuple[Path, os.stat_result]]] = {}
        for path in self.directory.iterdir():
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                groups.setdefault(path.name.split(".", 1)[0], []).append((path, path.stat()))
            except OSError:
                continue
        total = sum(st.st_size for files in groups.values() for _, st in files)
        for key in sorted(groups, key=lambda k: max(st.st_mtime for _, st in groups[k])):
            if total <= self.disk_bytes:
                break
            for path, st in groups[key]:
                path.unlink(missing_ok=True)
                total -= st.st_size
