"""Retake the README's screenshots: a real server on the committed gallery, headless Debian Chromium.

    .venv/bin/python docs/screenshots/take.py          # writes docs/screenshots/*.png (about 2 minutes)
"""

import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.streamlit_server import BROWSER_ARGS, CHROMIUM, streamlit_server  # noqa: E402
from viz.atlas.gallery import Gallery  # noqa: E402
from viz.engine.methods import METHODS  # noqa: E402


def deepest_redone_layer() -> str | None:
    """The deepest layer the committed gallery serves from today's recipe (a regeneration's front while it runs)."""
    g = Gallery(HERE.parent.parent / "gallery")
    redone = [layer for layer in g.all_layers("oxford")
              if g.layer("oxford", g.config_for("oxford", layer), layer).settings.get("recipe")
              == METHODS["fourier"].version]
    return redone[-1] if redone else None


def settle(pg, text: str, timeout: float = 120_000) -> None:
    """Wait for ``text``, then for every image to load and the page to stop changing."""
    pg.get_by_text(text).first.wait_for(timeout=timeout)
    pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                         timeout=timeout)  # the page's script run has ended (nothing more will be drawn)
    pg.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=60_000)
    pg.wait_for_timeout(2500)


def shoot(pg, name: str, width: int = 1400) -> None:
    """The whole page: Streamlit scrolls inside its main area, so the viewport grows to the content first."""
    height = pg.evaluate("() => document.querySelector('.stMain').scrollHeight")
    pg.set_viewport_size({"width": width, "height": min(6000, height + 40)})
    pg.wait_for_timeout(1500)
    pg.screenshot(path=str(HERE / name))
    pg.set_viewport_size({"width": width, "height": 1000})


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, \
            streamlit_server(Path(tmp) / "streamlit.log", VIZ_CACHE_DIR=tmp) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(f"{url}/overview")
        settle(pg, "Every layer at a glance")
        shoot(pg, "overview.png")
        pg.goto(f"{url}/gallery?layer=conv5_1")
        settle(pg, "page 1 of 22")
        shoot(pg, "gallery.png")
        if (layer := deepest_redone_layer()) is not None:
            pg.goto(f"{url}/gallery?layer={layer}")
            settle(pg, "page 1 of")
            shoot(pg, "gallery-redone.png")
        pg.goto(f"{url}/gallery?layer=conv5_1&channel=104")
        settle(pg, "Final activation")
        shoot(pg, "channel.png")
        pg.goto(f"{url}/compare?layer=conv5_1&channel=104&size=64&steps=64")
        pg.get_by_text("Estimated time on this server").wait_for(timeout=60_000)
        pg.get_by_role("button", name=re.compile("Render both")).click()
        pg.wait_for_function("() => document.body.innerText.split('Final activation').length == 3", timeout=300_000)
        settle(pg, "The right image along the way")
        shoot(pg, "compare.png")
        pg.goto(f"{url}/generator?layer=conv5_1&channel=104&size=64&steps=64")
        pg.get_by_text("Estimated time on this server").wait_for(timeout=60_000)
        pg.get_by_text("diversity (several different images)").click()
        pg.get_by_text("Diversity weight").wait_for(timeout=60_000)
        pg.wait_for_timeout(1500)
        pg.get_by_role("button", name=re.compile("Generate")).click()
        settle(pg, "Final activation", timeout=300_000)
        shoot(pg, "generator-diversity.png")
        pg.goto(f"{url}/photo")
        settle(pg, "channels of conv4_3 that fire most")
        shoot(pg, "photo.png")
        pg.goto(f"{url}/circuit?layer=conv5_1&channel=104&by=weight&depth=2")
        settle(pg, "Walk it")
        pg.wait_for_function("() => document.querySelectorAll('.js-plotly-plot image').length >= 25", timeout=60_000)
        pg.wait_for_timeout(1500)
        pg.locator(".stPlotlyChart").screenshot(path=str(HERE / "circuit.png"))
        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
        phone.goto(f"{url}/gallery?layer=conv5_1")
        settle(phone, "page 1 of 22")
        phone.screenshot(path=str(HERE / "phone-gallery.png"))
        browser.close()


if __name__ == "__main__":
    main()
