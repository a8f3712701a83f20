"""End to end in a real headless Chromium (Debian's package; Playwright only drives it, never downloads one):
start `streamlit run app.py`, open the gallery, open a channel, run a tiny generation. Screenshots go to
test-output/e2e/."""

import re
import time
from pathlib import Path

import pytest

from tests.streamlit_server import browser_page, expect_url, require_chromium, streamlit_server, tiny_gallery
from viz import LAYER_NAMES

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "e2e"


HOSTILE = "noise: ![pixel](http://127.0.0.1:9/pixel.png) [click](http://127.0.0.1:9/) **loud**"


def plant_hostile_evidence(root: Path) -> None:
    """Channel 3's record carries Markdown that would fetch a remote image if it were rendered."""
    import json

    from viz import make_settings
    from viz.atlas.records import LayerDir, config_name

    d = LayerDir(root, "oxford", config_name(make_settings("conv1_1", "fourier", size=32, steps=4)), "conv1_1")
    rec = json.loads(d.record(3).read_text())
    rec.update(flags=["noise"], evidence=HOSTILE)
    d.record(3).write_text(json.dumps(rec))
    d.manifest.unlink()  # read from the records


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_chromium()
    root = tiny_gallery(tmp_path_factory.mktemp("gallery"))
    plant_hostile_evidence(root)
    # a generous time limit: the 20000-step renders that keep a slot busy are accepted however slow the machine is
    with streamlit_server(tmp_path_factory.mktemp("log") / "streamlit.log", VIZ_GALLERY=str(root),
                          VIZ_CACHE_DIR=str(tmp_path_factory.mktemp("cache")), VIZ_SESSION_TIMEOUT="3",
                          VIZ_MAX_JOB_SECONDS="3600") as (url, _):
        yield url


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with browser_page() as pg:
        yield pg


def test_gallery_then_channel_then_generation(server, page):
    try:
        _journey(server, page)
    except BaseException:
        page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
        raise


def _journey(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/gallery?layer=conv1_1")
    expect(page.get_by_role("heading", name="Layer gallery")).to_be_visible(timeout=120_000)
    button = page.get_by_role("link", name=re.compile(r"^ch 2\b"))
    expect(button).to_be_visible(timeout=120_000)
    page.screenshot(path=str(SHOTS / "gallery.png"), full_page=True)

    button.click()
    expect(page.get_by_text("conv1_1 · channel 2")).to_be_visible(timeout=90_000)
    expect(page.get_by_text("Final activation", exact=True).first).to_be_visible()
    expect_url(page, has=("channel=2",))  # the view is a shareable link
    page.screenshot(path=str(SHOTS / "channel.png"), full_page=True)

    page.goto(f"{server}/generator?layer=conv2_1&channel=3")
    expect(page.get_by_role("heading", name="Generator")).to_be_visible(timeout=120_000)
    size = page.get_by_role("spinbutton", name="Size (px)")
    size.fill("32")
    steps = page.get_by_role("spinbutton", name="Steps")
    steps.fill("8")
    steps.press("Tab")
    page.get_by_role("button", name=re.compile("Generate")).click()
    expect(page.get_by_text("Final activation", exact=True).first).to_be_visible(timeout=120_000)
    # .first: the live view's heading and the result's can both be on the page for a moment
    expect(page.get_by_text("conv2_1 · channel 3 · fourier").first).to_be_visible()
    page.screenshot(path=str(SHOTS / "generator.png"), full_page=True)

    page.goto(f"{server}/gallery?layer=..%2F..%2Fetc&channel=abc")
    expect(page.get_by_text("unknown layer")).to_be_visible(timeout=120_000)
    page.screenshot(path=str(SHOTS / "hostile-link.png"), full_page=True)


def test_hostile_links_and_files_are_friendly(server, page):
    from playwright.sync_api import expect

    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if "127.0.0.1:9" in r.url else None)
    for path in ("gallery", "generator"):
        page.goto(f"{server}/{path}?layer=conv5_1&channel=%C2%B2")
        expect(page.get_by_text("channel must be a whole number")).to_be_visible(timeout=120_000)
        assert "Traceback" not in page.inner_text("body")
    page.goto(f"{server}/gallery?layer=conv1_1&channel=3")
    expect(page.get_by_text("conv1_1 · channel 3")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("![pixel](http://127.0.0.1:9/pixel.png)", exact=False)).to_be_visible()
    assert page.locator("a[href^='http://127.0.0.1:9']").count() == 0  # no link either
    expect(page.get_by_text("Final activation", exact=True).first).to_be_visible()
    page.screenshot(path=str(SHOTS / "hostile-evidence.png"), full_page=True)
    assert not fetched, f"the browser fetched {fetched}"


def test_a_closed_tab_stops_its_render(server, page):
    """A visitor starts a long render and closes the tab: the server stops it (no heartbeat, not connected)."""
    from playwright.sync_api import expect

    visitor = page.context.browser.new_page()
    _ask(visitor, server, "layer=conv3_1&channel=1", steps=20000)
    expect(visitor.get_by_text(re.compile(r"step \d+/20000"))).to_be_visible(timeout=120_000)
    visitor.close()
    page.goto(f"{server}/generator")  # a light page whose sidebar shows the server's state
    expect(page.get_by_text("Server: 1/1 generating")).to_be_visible(timeout=90_000)  # still running just after
    deadline = time.monotonic() + 60
    while True:
        page.get_by_text(re.compile(r"Server: \d/1 generating")).wait_for(timeout=90_000)
        if "Server: 0/1 generating" in page.inner_text("body"):
            break
        assert time.monotonic() < deadline, "the closed tab's render still runs after 60 s"
        page.wait_for_timeout(1000)
        page.reload()


def test_cancel_leaves_no_cancel_and_the_counts_agree(server, page):
    """Cancel a long render: the page shows the image so far without a Cancel button, and the sidebar's counts
    say nothing is generating, without a reload; while it runs, they count it."""
    from playwright.sync_api import expect

    page.goto(f"{server}/generator?layer=conv2_1&channel=2&size=32&steps=20000")
    expect(page.get_by_role("heading", name="Generator")).to_be_visible(timeout=120_000)
    expect(page.get_by_role("spinbutton", name="Steps")).to_have_value("20000", timeout=90_000)
    page.get_by_role("button", name=re.compile("Generate")).click()
    expect(page.get_by_text(re.compile(r"step \d+/20000"))).to_be_visible(timeout=120_000)
    expect(page.get_by_text(re.compile(r"Server: 1/1 generating"))).to_be_visible(timeout=90_000)
    page.get_by_role("button", name=re.compile("Cancel")).click()
    expect(page.get_by_text(re.compile(r"cancelled at step \d+"))).to_be_visible(timeout=90_000)
    expect(page.get_by_role("button", name=re.compile("Cancel"))).to_have_count(0, timeout=90_000)
    expect(page.get_by_text(re.compile(r"Server: 0/1 generating, 0 queued"))).to_be_visible(timeout=90_000)


def test_walk_a_circuit_down_and_back(server, page):
    """From conv5_1:104, three levels down by the links under the diagram (each a real link: the browser's history
    records it), then Back three times to where the walk began; a click on a node of the diagram re-centres it."""
    from playwright.sync_api import expect

    def settled(layer: str, channel: str) -> None:
        expect(page.get_by_role("spinbutton", name=re.compile(r"Channel"))).to_have_value(channel, timeout=120_000)
        expect(page.get_by_role("combobox", name="Layer")).to_have_value(re.compile(rf"^{layer} "), timeout=90_000)
        expect_url(page, has=(f"layer={layer}&", f"channel={channel}&"))  # the address follows the screen
        # the last row of links is this centre's (a link to the page keeps the last page's elements on screen until
        # the new run replaces them: its rows two levels down would otherwise be taken for this page's)
        names = list(LAYER_NAMES)
        lowest = names[names.index(layer) - 2] if names.index(layer) >= 2 else "photo"
        expect(page.get_by_text(f"Built from ({lowest}, 2 levels down)")).to_be_visible(timeout=120_000)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=120_000)  # idle: links stay put

    try:
        page.goto(f"{server}/circuit?layer=conv5_1&channel=104")
        expect(page.get_by_role("heading", name="Circuit")).to_be_visible(timeout=120_000)
        settled("conv5_1", "104")
        path = [("conv5_1", "104")]
        for below in ("conv4_3", "conv4_2", "conv4_1"):
            first = page.get_by_role("link", name=re.compile(rf"^{below}:\d+$")).first
            expect(first).to_be_visible(timeout=120_000)
            channel = first.inner_text().split(":")[1]
            # that very link, found by its whole name, clicked where it is: neither a late layout shift of the diagram
            # above nor a re-render of the list between finding and clicking can send the click to another link
            link = page.get_by_role("link", name=f"{below}:{channel}", exact=True).first
            link.evaluate("a => a.click()")
            settled(below, channel)
            path.append((below, channel))
        page.screenshot(path=str(SHOTS / "circuit.png"), full_page=True)
        for layer, channel in reversed(path[:-1]):
            page.go_back()
            settled(layer, channel)
        # a click on a node of the diagram (the first node of the row below the centre), once the page is idle
        page.goto(f"{server}/circuit?layer=conv5_1&channel=104")
        settled("conv5_1", "104")
        nodes = page.locator(".js-plotly-plot .scatterlayer .trace").last.locator("path.point")
        expect(nodes.first).to_be_attached(timeout=90_000)
        box = nodes.nth(1).bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        expect(page.get_by_role("combobox", name="Layer")).to_have_value(re.compile(r"^conv4_3 "), timeout=120_000)
        assert "Traceback" not in page.inner_text("body")
    except BaseException:
        page.screenshot(path=str(SHOTS / "circuit-failure.png"), full_page=True)
        raise


def test_your_photo_groups_with_an_uploaded_photo(server, page, tmp_path):
    """Issue 27 in a real browser: upload a photo, see its groups at conv4_3 (coloured photo, legend, maps, linked
    channels, the pixels of a group), render them as jobs, and accentuate one in the photo."""
    from PIL import Image
    from playwright.sync_api import expect

    from viz.base.corpus import load_photo
    from viz.base.images import thumbnail

    photo = tmp_path / "my cat.jpg"
    Image.fromarray(thumbnail(load_photo("chelsea"), 160)).save(photo, quality=90)
    try:
        page.goto(f"{server}/photo")
        expect(page.get_by_role("heading", name="Your photo")).to_be_visible(timeout=120_000)
        page.locator("input[type=file]").first.set_input_files(str(photo))
        expect(page.get_by_text("Groups: the few things conv4_3 sees in my cat.jpg")).to_be_visible(timeout=90_000)
        expect(page.get_by_text("coloured by the group strongest there")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("The pixels whose change")).to_be_visible(timeout=120_000)
        link = page.locator("a[href*='gallery?layer=conv4_3&channel=']").first
        expect(link).to_be_visible()
        size = page.get_by_role("spinbutton", name="Render size (px)")
        size.fill("32")
        size.press("Tab")
        steps = page.get_by_role("spinbutton", name="Render steps")
        steps.fill("4")
        steps.press("Tab")
        expect(page.get_by_text(re.compile("Estimated time on this server"))).to_be_visible(timeout=90_000)
        page.get_by_role("button", name=re.compile(r"Render the \d groups")).click()
        expect(page.get_by_text("32 px · 4 steps")).to_have_count(6, timeout=180_000)
        page.get_by_role("button", name=re.compile("Accentuate this group")).first.click()
        expect(page.get_by_text("32 px · 4 steps")).to_have_count(7, timeout=180_000)
        assert "Traceback" not in page.inner_text("body")
        page.screenshot(path=str(SHOTS / "photo-groups.png"), full_page=True)
    except BaseException:
        page.screenshot(path=str(SHOTS / "failure-groups.png"), full_page=True)
        raise


def test_your_photo_keeps_an_upload_across_a_link_and_back(server, page, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect

    from viz.base.corpus import load_photo
    from viz.base.images import thumbnail

    photo = tmp_path / "coffee mine.png"
    Image.fromarray(thumbnail(load_photo("coffee"), 128)).save(photo)
    page.goto(f"{server}/photo")
    expect(page.get_by_role("heading", name="Your photo")).to_be_visible(timeout=120_000)
    page.locator("input[type=file]").first.set_input_files(str(photo))
    expect(page.get_by_text("fire most on coffee mine.png")).to_be_visible(timeout=90_000)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=90_000)
    # leave for another page (this server's tiny gallery has no conv4_3, so not a channel link: the gallery would
    # correct the link, one more history entry) and come Back
    page.get_by_role("link", name="Overview").first.click()
    expect(page.get_by_role("heading", name="VGG16 Feature Atlas")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=90_000)
    page.go_back()
    try:
        expect(page.get_by_text("fire most on coffee mine.png")).to_be_visible(timeout=90_000)
    except AssertionError:
        page.screenshot(path=str(SHOTS / "failure-kept-upload.png"), full_page=True)
        raise
    expect(page.get_by_text("Your earlier upload, coffee mine.png, is still used.").first).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=120_000)  # the page has settled
    page.get_by_role("button", name=re.compile("Forget it")).click()
    expect(page.get_by_text(re.compile(r"fire most on skimage/"))).to_be_visible(timeout=90_000)


def test_an_uploads_name_is_plain_text_and_a_strip_is_one_line(server, page):
    """Issue 24: a file name with a Markdown image tag is shown as its text (the browser fetches nothing), and a
    20000 x 8 strip is refused with one line before any work."""
    import numpy as np
    from playwright.sync_api import expect

    from viz.base.corpus import load_photo
    from viz.base.images import png_bytes, thumbnail

    name = "![x](http://127.0.0.1:9/p.png) *b*.png"
    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if "127.0.0.1:9/" in r.url else None)
    page.goto(f"{server}/photo")
    expect(page.get_by_role("heading", name="Your photo")).to_be_visible(timeout=120_000)
    upload = page.locator("input[type=file]").first
    upload.set_input_files(files=[{"name": name, "mimeType": "image/png",
                                   "buffer": png_bytes(thumbnail(load_photo("coffee"), 96))}])
    expect(page.get_by_text(f"fire most on {name}")).to_be_visible(timeout=90_000)
    assert page.locator("img[src*='127.0.0.1:9']").count() == 0 and fetched == []
    upload.set_input_files(files=[{"name": "strip.png", "mimeType": "image/png",
                                   "buffer": png_bytes(np.zeros((8, 20000, 3), np.uint8))}])
    expect(page.get_by_text("strip.png: too thin (20000 x 8)")).to_be_visible(timeout=120_000)
    assert "Traceback" not in page.inner_text("body")


def test_two_tabs_of_one_browser_are_one_visitor(server, page):
    """Issue 24: the per-visitor limit counts the tabs of one browser: while one tab's render runs, a second tab of
    the same browser is told it already has one (a different browser would not be)."""
    from playwright.sync_api import expect

    page.goto(f"{server}/generator?layer=conv2_1&channel=2&size=32&steps=20000")
    expect(page.get_by_role("spinbutton", name="Steps")).to_have_value("20000", timeout=120_000)
    page.get_by_role("button", name=re.compile("Generate")).click()
    expect(page.get_by_text(re.compile(r"step \d+/20000"))).to_be_visible(timeout=120_000)
    other = page.context.new_page()
    try:
        other.goto(f"{server}/generator?layer=conv2_1&channel=3&size=32&steps=8")
        expect(other.get_by_role("spinbutton", name="Steps")).to_have_value("8", timeout=120_000)
        other.get_by_role("button", name=re.compile("Generate")).click()
        expect(other.get_by_text(re.compile(r"you already have 1 render"))).to_be_visible(timeout=120_000)
    finally:
        other.close()
        page.get_by_role("button", name=re.compile("Cancel")).click()
        expect(page.get_by_text(re.compile(r"cancelled at step \d+"))).to_be_visible(timeout=90_000)


def _ask(page, server, query: str, steps: int) -> None:
    """Open the Generator on ``query``, fill in 32 px x ``steps`` and click Generate once the estimate is shown."""
    from playwright.sync_api import expect

    page.goto(f"{server}/generator?{query}")
    expect(page.get_by_role("heading", name="Generator")).to_be_visible(timeout=120_000)
    page.get_by_role("spinbutton", name="Size (px)").fill("32")
    box = page.get_by_role("spinbutton", name="Steps")
    box.fill(str(steps))
    box.press("Tab")
    page.get_by_text("Estimated time on this server").wait_for(timeout=120_000)
    page.get_by_role("button", name=re.compile("Generate")).click()


def _generate(page, server, query: str):
    """Open the Generator on ``query``, ask for 32 px x 16 steps and wait for the finished result."""
    from playwright.sync_api import expect

    _ask(page, server, query, steps=16)
    expect(page.get_by_text("Final activation", exact=True).first).to_be_visible(timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)


def _y_title(page) -> str:
    return page.locator(".js-plotly-plot .g-ytitle").last.text_content()


def test_the_generators_views_say_what_they_show(server, page):
    """Issue 25, walked: a view of several images captions each image and downloads each under its own name and
    all in one zip; the curve of a negative view is labelled with what it plots, and the octaves are marked on
    it; an accent names its photo (never a digest) and shows the photo beside the result."""
    from playwright.sync_api import expect

    _generate(page, server, "layer=conv2_1&channel=3&view=diversity&n=2")
    for words in ("image 1 of 2 (pushed apart from the others)", "image 2 of 2 (pushed apart from the others)"):
        expect(page.get_by_text(words).first).to_be_visible()  # .first: a rerun may briefly show it twice
    names = []
    for button in page.get_by_role("button", name="PNG", exact=True).all():
        with page.expect_download(timeout=90_000) as got:
            button.click()
        names.append(got.value.suggested_filename)
    with page.expect_download(timeout=90_000) as got:
        page.get_by_role("button", name="Download all 2 (zip)").click()
    names.append(got.value.suggested_filename)
    assert len(names) == 3 and len(set(names)) == 3, names
    assert names[0].endswith("diversity-0.png") and names[2].endswith(".zip"), names
    assert _y_title(page) == "channel mean + diversity term"
    page.screenshot(path=str(SHOTS / "diversity.png"), full_page=True)

    _generate(page, server, "layer=conv2_1&channel=3&view=negative")
    assert _y_title(page) == "minus the channel's mean activation"  # not "channel activation"
    marks = page.locator(".js-plotly-plot").last.locator("text", has_text=re.compile(r"^(\d+% size|full size)$"))
    assert marks.count() == 3, marks.all_text_contents()  # fourier grows through three octaves
    # .first: while the script reruns, the last run's note can be on screen beside the new one for a moment
    expect(page.get_by_text("Dotted lines: where the image grows to a finer scale").first).to_be_visible()

    _generate(page, server, "layer=conv2_1&channel=3&view=accent&photo=skimage/astronaut.png")
    expect(page.get_by_text("conv2_1 · channel 3 · fourier · accentuates astronaut.png").first).to_be_visible()
    expect(page.get_by_text("the start photo (astronaut.png)").first).to_be_visible()
    body = page.inner_text("body")
    assert not re.search(r"accent\([0-9a-f]{8,}", body), "the accent shows its photo's digest"
    page.screenshot(path=str(SHOTS / "accent.png"), full_page=True)
