"""Start and stop a real `streamlit run app.py` for browser tests (loopback only)."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from viz.base.memory import peak_bytes

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

try:  # an expectation without a timeout of its own waits 60 s, not Playwright's 5 s: the suite runs in parallel
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
except ImportError:  # the browser tests skip without Playwright
    pass


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}: `make test` installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (make test installs it)")


def tiny_gallery(root: Path) -> Path:
    """Four conv1_1 channels at 32 px, 4 steps: enough for the pages to have something to show."""
    from viz import make_settings
    from viz.atlas.precompute import precompute

    precompute(root, make_settings("conv1_1", "fourier", size=32, steps=4), {"conv1_1": [0, 1, 2, 3]},
               device="cpu", retries=0)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    peak = peak_bytes(pid)
    return float("nan") if peak is None else peak / 2**20


@contextmanager
def streamlit_server(log_path: Path, **env_extra: str):
    """Yield (url, process); on exit stop it and fail if it logged a traceback."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_extra}
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        log.seek(0)
        pytest.fail("streamlit did not start: " + log.read()[-2000:])
    try:
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.seek(0)
        text = log.read()
        # Streamlit marks exceptions raised by the app itself with this line (its own websocket-teardown noise
        # when browsers close is not the app's).
        assert "Uncaught app execution" not in text, "the app raised:\n" + text[-3000:]


@contextmanager
def browser_page(width: int = 1400, height: int = 1000, shot: Path | None = None, mobile: bool = False):
    """A page of headless Debian Chromium (waits without a timeout of their own get 90 s), a phone's (its
    viewport meta tag honoured) when ``mobile``; on a failure inside the block, a full-page screenshot to ``shot``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height},  # more tabs: pg.context
                                      is_mobile=mobile)
        context.set_default_timeout(90_000)
        pg = context.new_page()
        try:
            yield pg
        except BaseException:
            if shot is not None:
                shot.parent.mkdir(parents=True, exist_ok=True)
                pg.screenshot(path=str(shot), full_page=True)
            raise
        finally:
            browser.close()


def expect_url(page, has: tuple[str, ...] = (), lacks: tuple[str, ...] = (), timeout: int = 90_000) -> None:
    """Wait until the page's address holds every part of ``has`` and none of ``lacks``. A page writes its state
    into the address during its script run, after the widgets above that line are drawn: the address can trail
    what the screen shows by a moment, so a bare ``in page.url`` right after a widget check races it."""
    from playwright.sync_api import expect

    pattern = "".join(f"(?=.*{re.escape(s)})" for s in has) + "".join(f"(?!.*{re.escape(s)})" for s in lacks)
    expect(page).to_have_url(re.compile(f"^{pattern}.*$"), timeout=timeout)
