"""The browser tests' shared fixtures: a real server with the committed gallery, one per test module (each module
is one group of the parallel run, see tests/conftest.py), and a desktop Chromium page on it. test_e2e.py serves a
gallery of its own and overrides both."""

from pathlib import Path

import pytest

from tests.streamlit_server import browser_page, require_chromium, streamlit_server

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "visitor"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on the committed gallery, with a cache of its own."""
    require_chromium()
    with streamlit_server(tmp_path_factory.mktemp("log") / "streamlit.log",
                          VIZ_CACHE_DIR=str(tmp_path_factory.mktemp("cache"))) as (url, _):
        yield url


@pytest.fixture
def page(server):
    with browser_page(shot=SHOTS / "failure.png") as pg:
        yield pg
