"""Helpers shared by the tests (fixtures live in conftest.py; the real server and browser in streamlit_server.py)."""

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

from viz import make_settings

TINY = make_settings("conv1_1", "fourier", size=32, steps=4)  # the app tests' gallery recipe


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m viz ARGS`` in a fresh process, its output captured; a run past ``timeout`` seconds fails."""
    return subprocess.run([sys.executable, "-m", "viz", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m viz ARGS`` run in this process (``viz.cli.main``, which is all ``python -m viz`` does): the same
    exit status and output, without a new interpreter's start-up (importing torch, loading the weights: 3-7 s
    here). An exception the CLI lets out fails the test, as a traceback on its stderr would. Tests of a process
    itself (kill -9, a lock held by another process, what a fresh interpreter imports) use :func:`run_cli`."""
    from viz.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["viz", *args], code, out.getvalue(), err.getvalue())


def serve_gallery(root):
    """The app reads the gallery at ``root`` while the fixture lasts (``VIZ_GALLERY``), then what it read before."""
    old = os.environ.get("VIZ_GALLERY")
    os.environ["VIZ_GALLERY"] = str(root)
    yield root
    if old is None:
        os.environ.pop("VIZ_GALLERY", None)
    else:
        os.environ["VIZ_GALLERY"] = old
