"""Files on disk: atomic writes, and checks that an output path is usable before any work is done."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

from .errors import GalleryError, VizError

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: app.py, gallery/, docs/
COMMITTED_GALLERY = PROJECT_ROOT / "gallery"  # the galleries and examples that ship with the code


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: readers never see half a file.

    The temporary name is short and unique (``.<pid>-<random>.tmp``), whatever the length of ``path``'s name, and
    never shared between processes or threads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _probe_dir(directory: Path, what: str) -> None:
    """Create and remove a file in ``directory``: it exists (or can be made) and is writable."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise VizError(f"{what} {_shown(str(directory))} is a file, not a directory") from None
    except NotADirectoryError:
        raise VizError(f"{what} {_shown(str(directory))}: a part of that path is a file") from None
    except OSError as exc:
        raise VizError(f"cannot write in {what} {_shown(str(directory))}: {exc.strerror}") from None


def check_output_file(text: str, suffix: str, what: str = "--out") -> Path:
    """A file path that can be written (checked before rendering): named, with ``suffix``, a name the file
    system accepts, in a writable directory."""
    if not text or not text.strip():
        raise VizError(f"{what} must name a {suffix} file")
    path = Path(text)
    if path.suffix.lower() != suffix or path.name.startswith("."):
        raise VizError(f"{what} must be a {suffix} file, got {_shown(text)}")
    parent = path.parent
    try:
        name_max = os.pathconf(parent if parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) > name_max:
        raise VizError(f"{what}: the file name is {len(os.fsencode(path.name))} bytes long, this file system "
                       f"allows {name_max}")
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        raise VizError(f"{what} {_shown(text)}: {exc.strerror}") from None
    if is_dir:
        raise VizError(f"{what} {_shown(text)} is a directory")
    _probe_dir(parent, f"{what}'s directory")
    return path


def check_output_dir(text: str, what: str = "--out") -> Path:
    """A directory that exists or can be made, and is writable (checked before rendering)."""
    if not text or not text.strip():
        raise VizError(f"{what} must name a directory")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise VizError(f"{what} {_shown(text)} is a file, not a directory")
    _probe_dir(path, what)
    return path


def safe_name(text: str, empty: str = "weights") -> str:
    """A file or directory name for any text (weights like ``file:mine:abc123``, views, corpora): letters,
    digits and ``._-`` only, at most 80 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._-") or empty
    return name[:80]


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # '[' x 200000 recurses
        raise GalleryError(f"{path.name} is unreadable ({type(exc).__name__})") from None
