"""Load test: 8 browser sessions at once against the real server, through the generator and the gallery.

Every session must get its result or a queue message, the server must keep answering its health check
quickly, and its memory must stay bounded."""

import re
import subprocess
import sys

import pytest

from tests.streamlit_server import BROWSER_ARGS, CHROMIUM, require_chromium, rss_mb, streamlit_server, tiny_gallery

SESSIONS = 8
PROBE = """
import sys, time, urllib.request
while True:
    t = time.perf_counter()
    try:
        ok = urllib.request.urlopen(sys.argv[1], timeout=30).read() == b"ok"
    except OSError:
        ok = False
    print(f"{time.time():.2f} {time.perf_counter() - t if ok else float('inf'):.4f}", flush=True)
    time.sleep(0.25)
"""
pytestmark = pytest.mark.load


@pytest.fixture(scope="module")
def loaded_server(tmp_path_factory):
    require_chromium()
    root = tiny_gallery(tmp_path_factory.mktemp("gallery"))
    cache = tmp_path_factory.mktemp("cache")  # cold result cache: every generation really runs
    with streamlit_server(tmp_path_factory.mktemp("log") / "streamlit.log", VIZ_GALLERY=str(root),
                          VIZ_CACHE_DIR=str(cache), VIZ_MAX_RUNNING="2", VIZ_MAX_QUEUED="16") as server:
        yield server


def test_eight_concurrent_sessions(loaded_server):
    from playwright.sync_api import sync_playwright

    url, proc = loaded_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        pages = [browser.new_page() for _ in range(SESSIONS)]
        # half warm up the gallery, half the generator; then every session generates a different channel
        for i, pg in enumerate(pages):
            pg.goto(f"{url}/gallery?layer=conv1_1" if i % 2 else f"{url}/generator?layer=conv2_1&channel={i}")
        for i, pg in enumerate(pages):
            if i % 2:
                pg.get_by_role("button", name=re.compile(r"^ch 1\b")).wait_for(timeout=90_000)
        rss_before = rss_mb(proc.pid)
        # the health probe runs in its own process, so the browsers' driver in this one cannot delay it
        prober = subprocess.Popen([sys.executable, "-c", PROBE, f"{url}/_stcore/health"], stdout=subprocess.PIPE,
                                  text=True)
        for i, pg in enumerate(pages):
            if i % 2:
                pg.goto(f"{url}/generator?layer=conv2_1&channel={i}")
            pg.get_by_role("heading", name="Generator").wait_for(timeout=90_000)
            pg.get_by_label("Size (px)").fill("32")
            steps = pg.get_by_label("Steps")
            steps.fill("24")
            steps.press("Tab")
        for pg in pages:  # submit all at once
            pg.get_by_role("button", name=re.compile("Generate")).click()
        saw_queue = False
        for pg in pages:  # every session shows progress, a queue position or already its result
            pg.wait_for_function(
                "() => /Queued: position|step \\d+\\/24|Final activation/.test(document.body.innerText)",
                timeout=60_000)
            saw_queue |= "Queued: position" in pg.inner_text("body")
        for i, pg in enumerate(pages):  # and then its own result
            try:
                pg.get_by_text("Final activation").wait_for(timeout=240_000)
            except Exception:  # say what the stuck session shows instead
                text = " ".join(pg.inner_text("body").split())
                raise AssertionError(f"session {i} got no result; it shows: {text[-600:]}") from None
            assert f"conv2_1 · channel {i} · fourier" in pg.inner_text("body")
        prober.terminate()
        latencies = [float(line.split()[1]) for line in prober.communicate(timeout=10)[0].splitlines() if line]
        rss_after = rss_mb(proc.pid)
        # the gallery still answers after the burst
        pages[0].goto(f"{url}/gallery?layer=conv1_1&channel=2")
        pages[0].get_by_text("conv1_1 · channel 2").wait_for(timeout=60_000)
        browser.close()
    assert saw_queue, "with 2 slots and 8 sessions some session must have been shown its queue position"
    # responsive: nearly every probe answers fast; on 2 cores shared with 8 browsers a rare probe may stall
    # for a moment (seen: one at 2.4 s among hundreds of a few ms), but never for long
    lat = sorted(latencies)
    p95 = lat[int(0.95 * (len(lat) - 1))] if lat else float("inf")
    assert lat and p95 < 1.0 and lat[-1] < 5.0, (f"health check p95 {p95:.2f}s, slowest {lat[-1]:.2f}s, "
                                                       f"{sum(x > 1 for x in lat)} of {len(lat)} probes over 1 s")
    assert rss_after - rss_before < 1024, f"server memory grew {rss_after - rss_before:.0f} MB"
