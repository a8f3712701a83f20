"""Helpers shared by the tests (fixtures live in conftest.py; the real server and browser in streamlit_server.py)."""

import os
import subprocess
import sys

from viz import make_settings

TINY = make_settings("conv1_1", "fourier", size=32, steps=4)  # the app tests' gallery recipe


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m viz ARGS`` in a fresh process, its output captured; a run past ``timeout`` seconds fails."""
    return subprocess.run([sys.executable, "-m", "viz", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def serve_gallery(root):
    """The app reads the gallery at ``root`` while the fixture lasts (``VIZ_GALLERY``), then what it read before."""
    old = os.environ.get("VIZ_GALLERY")
    os.environ["VIZ_GALLERY"] = str(root)
    yield root
    if old is None:
        os.environ.pop("VIZ_GALLERY", None)
    else:
        os.environ["VIZ_GALLERY"] = old
