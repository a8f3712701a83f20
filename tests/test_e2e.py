"""End to end in a real headless Chromium (Debian's package; Playwright only drives it, never downloads one):
start `streamlit run app.py`, open the gallery, open a channel, run a tiny generation. Screenshots go to
test-output/e2e/."""

import re
from pathlib import Path

import pytest

from tests.streamlit_server import BROWSER_ARGS, CHROMIUM, require_chromium, streamlit_server, tiny_gallery

SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "e2e"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_chromium()
    root = tiny_gallery(tmp_path_factory.mktemp("gallery"))
    with streamlit_server(tmp_path_factory.mktemp("log") / "streamlit.log", VIZ_GALLERY=str(root)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def test_gallery_then_channel_then_generation(server, page):
    try:
        _journey(server, page)
    except BaseException:
        page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
        raise


def _journey(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/gallery?layer=conv1_1")
    expect(page.get_by_role("heading", name="Layer gallery")).to_be_visible(timeout=60_000)
    button = page.get_by_role("button", name=re.compile(r"^ch 2\b"))
    expect(button).to_be_visible(timeout=60_000)
    page.screenshot(path=str(SHOTS / "gallery.png"), full_page=True)

    button.click()
    expect(page.get_by_text("conv1_1 · channel 2")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Final activation")).to_be_visible()
    assert "channel=2" in page.url  # the view is a shareable link
    page.screenshot(path=str(SHOTS / "channel.png"), full_page=True)

    page.goto(f"{server}/generator?layer=conv2_1&channel=3")
    expect(page.get_by_role("heading", name="Generator")).to_be_visible(timeout=60_000)
    size = page.get_by_label("Size (px)")
    size.fill("32")
    steps = page.get_by_label("Steps")
    steps.fill("8")
    steps.press("Tab")
    page.get_by_role("button", name=re.compile("Generate")).click()
    expect(page.get_by_text("Final activation")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("conv2_1 · channel 3 · fourier")).to_be_visible()
    page.screenshot(path=str(SHOTS / "generator.png"), full_page=True)

    page.goto(f"{server}/gallery?layer=..%2F..%2Fetc&channel=abc")
    expect(page.get_by_text("unknown layer")).to_be_visible(timeout=60_000)
    page.screenshot(path=str(SHOTS / "hostile-link.png"), full_page=True)
