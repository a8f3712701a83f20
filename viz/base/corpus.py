"""Image corpora for dataset examples: the photos bundled with installed packages, or any folder a user has.

Every image comes out as RGB uint8 whatever it was on disk (EXIF orientation applied; grayscale, palette, CMYK,
16-bit and alpha converted). A file that is empty, corrupt, too large or not an image is skipped with one note
and counted, never fatal. Images are named by their path relative to the corpus root, so results never copy a
corpus: crops are cut from the original file when they are shown.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import VizError
from .files import safe_name

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 50_000_000  # larger images are skipped (a decompression bomb, or a scan too big to be a photo)
MAX_BYTES = 200 << 20
MAX_ASPECT = 10  # a longer side over ten times the shorter is a strip, not a photo
UPLOAD_SIDE = 2048  # a visitor's upload is decoded at most this large (JPEG at a reduced scale, others shrunk)

# Every colour photograph shipped inside the packages this project installs (nothing is downloaded), with its
# licence as the package states it (scikit-image: skimage/data docstrings; scikit-learn: datasets/images/README).
BUNDLED: dict[str, tuple[str, str, str]] = {
    # name: (package, file inside the package's data folder, licence)
    "skimage/astronaut.png": ("skimage", "data/astronaut.png", "public domain (NASA)"),
    "skimage/chelsea.png": ("skimage", "data/chelsea.png", "CC0 (Stefan van der Walt)"),
    "skimage/coffee.png": ("skimage", "data/coffee.png", "CC0 (Rachel Michetti)"),
    "skimage/rocket.jpg": ("skimage", "data/rocket.jpg", "public domain (SpaceX)"),
    "skimage/hubble_deep_field.jpg": ("skimage", "data/hubble_deep_field.jpg", "public domain (NASA)"),
    "skimage/ihc.png": ("skimage", "data/ihc.png", "no known copyright restrictions (CMMI)"),
    "skimage/retina.jpg": ("skimage", "data/retina.jpg", "CC0 (Mikael Häggström)"),
    "skimage/motorcycle_left.png": ("skimage", "data/motorcycle_left.png",
                                    "Middlebury stereo 2014 (Scharstein et al.), research use"),
    "skimage/motorcycle_right.png": ("skimage", "data/motorcycle_right.png",
                                     "Middlebury stereo 2014 (Scharstein et al.), research use"),
    "sklearn/china.jpg": ("sklearn", "datasets/images/china.jpg", "CC BY 2.0 (danielbuechele, Flickr)"),
    "sklearn/flower.jpg": ("sklearn", "datasets/images/flower.jpg", "CC BY 2.0 (vultilion, Flickr)"),
}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise VizError(f"the package {package!r} is not installed: pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Corpus:
    """A named set of images: ``bundled`` or a folder (``root``), with its images' relative names."""

    name: str
    root: Path | None  # None for the bundled corpus
    images: tuple[str, ...]

    def path(self, image: str) -> Path:
        """The file of ``image`` (one of :attr:`images`; nothing else is resolved)."""
        if image not in self.images:
            raise VizError(f"{image[:60]!r} is not in the corpus {self.name!r}")
        if self.root is None:
            package, rel, _ = BUNDLED[image]
            return _package_dir(package) / rel
        return self.root / image

    @property
    def signature(self) -> str:
        """Changes when the corpus changes (names, sizes, modification times)."""
        h = hashlib.sha256(self.name.encode())
        for image in self.images:
            try:
                st = self.path(image).stat()
                h.update(f"{image}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
            except OSError:
                h.update(f"{image}\0missing\n".encode())
        return h.hexdigest()[:16]

    def to_json(self) -> dict:
        return {"name": self.name, "root": None if self.root is None else str(self.root), "images": list(self.images)}

    @classmethod
    def from_json(cls, obj: dict) -> "Corpus":
        root = obj.get("root")
        return cls(str(obj["name"]), None if root is None else Path(root), tuple(str(i) for i in obj["images"]))


def bundled() -> Corpus:
    return Corpus("bundled", None, tuple(BUNDLED))


def folder(path: str | Path) -> Corpus:
    """Every regular file with an image extension below ``path`` (sorted; hidden files and folders skipped; links
    to folders not followed; devices, FIFOs and sockets never listed, whatever their name), found without
    recursion however deep the folders go."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise VizError(f"--images {str(path)[:60]!r} is not a directory (or use --images bundled)")
    root = root.resolve()
    names, stack = [], [root]
    while stack:
        here = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:  # unreadable, or a path too long to open: its images cannot be read either
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif Path(entry.name).suffix.lower() in EXTENSIONS and stat.S_ISREG(entry.stat().st_mode):
                    names.append(str(Path(entry.path).relative_to(root)))
            except OSError:  # a dangling link
                continue
    if not names:
        raise VizError(f"no images ({', '.join(EXTENSIONS)}) found under {str(path)[:60]!r}")
    return Corpus(safe_name(root.name) or "images", root, tuple(sorted(names)))


def resolve(spec: str) -> Corpus:
    """``bundled`` or a folder path."""
    return bundled() if spec == "bundled" else folder(spec)


def load_photo(spec: str) -> np.ndarray:
    """A photo file, or else a bundled photo by name (``astronaut`` or ``skimage/astronaut.png``), as RGB uint8."""
    text = str(spec).strip()
    path = Path(text)
    if path.is_file():  # a file of the user's wins over a bundled photo of the same name
        return load_rgb(path)
    for name in BUNDLED:
        if text in (name, name.split("/")[-1], name.split("/")[-1].rsplit(".", 1)[0]):
            return load_rgb(bundled().path(name))
    if not path.is_file():
        names = ", ".join(n.split("/")[-1].rsplit(".", 1)[0] for n in BUNDLED)
        raise VizError(f"no photo {text[:60]!r}: give an image file or a bundled photo ({names})")
    return load_rgb(path)


def load_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), or :class:`VizError` saying in a few words why not. Only a regular
    file is opened (a FIFO would block, a device never end), and never more than :data:`MAX_BYTES` is read."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise VizError("not a regular file")
        if st.st_size > MAX_BYTES:
            raise VizError(f"file too large ({st.st_size >> 20} MB)")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise VizError(f"unreadable ({exc.strerror})") from None
    return decode(data)


EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that shows the image upright (as ``ImageOps.exif_transpose``)
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


def decode(data: bytes, max_bytes: int = MAX_BYTES, max_side: int | None = None) -> np.ndarray:
    """Image bytes (any format Pillow reads; EXIF orientation applied) as RGB uint8 (H, W, 3), or
    :class:`VizError` saying in a few words why not: empty, too large, too many pixels, too thin, not an image.

    With ``max_side`` the result is at most that large on its longer side, and the memory it takes to get there is
    bounded by it too: a JPEG is decoded at a reduced scale, other formats are shrunk before any conversion."""
    if not data:
        raise VizError("empty file")
    if len(data) > max_bytes:
        raise VizError(f"file too large ({len(data) / 2**20:.0f} MB, at most {max_bytes >> 20} MB)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise VizError(f"too many pixels ({w} x {h})")
            if max(w, h) > MAX_ASPECT * min(w, h):
                raise VizError(f"too thin ({w} x {h}): the long side may be at most {MAX_ASPECT} times the short one")
            if max_side and max(w, h) > max_side and im.format == "JPEG":
                im.draft("RGB" if im.mode == "RGB" else None, (max_side, max_side))  # DCT scaling: 1/2 to 1/8
            turn = ORIENTATIONS.get(im.getexif().get(EXIF_ORIENTATION, 1))  # read before a shrink drops the EXIF
            small = shrink(im, max_side) if max_side else im
            if small is not im:
                im.close()  # the full-size pixels go before the small image is converted
            return to_rgb(small.transpose(turn) if turn is not None else small)
    except VizError:
        raise
    except Image.DecompressionBombError:
        raise VizError("too many pixels") from None
    except Exception as exc:  # Pillow raises many kinds for broken files
        raise VizError(f"not a readable image ({type(exc).__name__})") from None


def shrink(im: Image.Image, max_side: int) -> Image.Image:
    """``im`` reduced by a whole factor (box filter) until its longer side is at most ``max_side``, in its own mode
    where Pillow can (16-bit images through a strided view, palette and 1-bit ones through RGB or L).

    The work is done band by band (``k`` x 64 rows at a time), so beside the decoded image it takes only one band:
    Pillow's ``reduce`` of a whole RGBA image first makes a premultiplied copy as large as the image, and a 16-bit
    image's array view copies all of it. The bands' heights are multiples of ``k``, so the result is the same as
    one ``reduce`` of the whole image."""
    k = math.ceil(max(im.size) / max_side)
    if k <= 1:
        return im
    if im.mode in ("P", "1"):
        im = im.convert("RGBA" if "transparency" in im.info else "RGB" if im.mode == "P" else "L")
    sixteen = im.mode.startswith("I;16")
    w, h = im.size
    out = Image.new("I" if sixteen else im.mode, (math.ceil(w / k), math.ceil(h / k)))
    band = 64 * k
    for top in range(0, h, band):
        part = im.crop((0, top, w, min(h, top + band)))
        small = Image.fromarray(np.asarray(part)[::k, ::k].astype(np.int32)) if sixteen else part.reduce(k)
        out.paste(small, (0, top // k))
    return out


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> RGB uint8: 16-bit and float images are scaled, alpha is composed over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255
        im = Image.fromarray(arr.astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    arr = np.asarray(im.convert("RGB"))
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 8:
        raise VizError(f"too small ({arr.shape[1]} x {arr.shape[0]})")
    return np.ascontiguousarray(arr)


def iter_images(corpus: Corpus, skip: set[str] | None = None) -> Iterator[tuple[int, str, np.ndarray | None, str]]:
    """(index, name, RGB array or None, why skipped) for every image of the corpus not in ``skip``."""
    for i, name in enumerate(corpus.images):
        if skip and name in skip:
            continue
        try:
            yield i, name, load_rgb(corpus.path(name)), ""
        except VizError as exc:
            yield i, name, None, str(exc)
