"""How the pages look, in a real headless Chromium against a real server with the committed gallery: on a phone
(390 x 844, issue 25) and in the theme a visitor chose. Screenshots go to test-output/visitor/."""

import re

import pytest

from tests.browser.conftest import SHOTS
from tests.streamlit_server import browser_page

PHONE = {"width": 390, "height": 844, "mobile": True}
# what a phone's page shows cut short: numbers, labels, buttons (a segmented control's too), captions, links' labels
# and a selectbox's value ("conv5_1 (5"), each narrower than its text or reaching past the screen's edge
CUT_SHORT = """() => [...document.querySelectorAll('.stMainBlockContainer :is([data-testid="stMetricValue"] div, '
    + '[data-testid="stMetricLabel"] p, button, button *, [data-testid="stButtonGroup"], '
    + '[data-testid="stButtonGroup"] *, [data-testid="stCaptionContainer"], a p, [data-testid="stSelectbox"] input)')]
  .filter(e => e.offsetParent && (e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > innerWidth + 1))
  .map(e => (e.value || e.innerText || '').slice(0, 40))"""


def test_a_phone_sees_the_first_image_without_scrolling(server):
    with browser_page(**PHONE, shot=SHOTS / "failure-phone.png") as phone:
        phone.goto(f"{server}/gallery?layer=conv5_1")
        phone.get_by_role("link", name=re.compile(r"^ch 23\b")).wait_for(timeout=120_000)
        phone.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=90_000)
        top = phone.evaluate("() => document.querySelector('.stMainBlockContainer img').getBoundingClientRect().top")
        height = phone.evaluate("() => document.querySelector('.stMainBlockContainer').scrollHeight")
        phone.screenshot(path=str(SHOTS / "phone-gallery.png"))
    assert top < 844, f"the first image starts at {top:.0f} px, below a 844 px screen"
    assert height < 4000, f"a page of the grid is {height:.0f} px tall on a phone"


def test_a_phone_reads_a_channel_detail_whole(server):
    """At 390 x 844 the detail's picture and curve stack, its numbers, buttons and links are never cut short
    ("4…", "Back to th…", "Render it bigger…"), and the curve has no toolbar over it."""
    with browser_page(**PHONE, shot=SHOTS / "failure-phone.png") as phone:
        phone.goto(f"{server}/gallery?layer=conv5_1&channel=104")
        phone.get_by_text("Colour distance").first.wait_for(timeout=90_000)
        phone.get_by_text(re.compile(r"Render it bigger")).wait_for(timeout=90_000)
        phone.wait_for_timeout(1500)
        cut = phone.evaluate(CUT_SHORT)
        toolbars = phone.locator(".modebar-container .modebar").count()
        phone.screenshot(path=str(SHOTS / "phone-detail.png"), full_page=True)
    assert not cut, f"cut short on a phone: {cut}"
    assert toolbars == 0


@pytest.mark.parametrize("path, ready", [("/", "Strongest photos"), ("/photo", "fire most on"),
                                         ("/gallery?layer=conv5_1", "page 1 of 22"),
                                         ("/generator?layer=conv5_1&channel=104", "Estimated time on this server"),
                                         ("/compare?layer=conv5_1&channel=104", "Estimated time on this server"),
                                         ("/circuit?layer=conv5_1&channel=104", "Built from")])
def test_a_phone_reads_every_page(server, path, ready):
    """Issue 25: at 390 x 844 every page (Overview, Your photo, gallery, Generator, Compare, circuit) scrolls only
    down (nothing wider than the phone), and no number, label, button, choice or caption is cut short."""
    with browser_page(**PHONE, shot=SHOTS / "failure-phone.png") as phone:
        phone.goto(f"{server}{path}")
        phone.get_by_text(ready).first.wait_for(timeout=120_000)
        phone.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=120_000)
        phone.wait_for_timeout(1500)
        wide = phone.evaluate("() => document.querySelector('.stMainBlockContainer').scrollWidth")
        cut = phone.evaluate(CUT_SHORT)
        height = phone.evaluate("() => document.querySelector('.stMainBlockContainer').scrollHeight")
        phone.screenshot(path=str(SHOTS / f"phone-{path.strip('/').split('?')[0] or 'overview'}.png"), full_page=True)
    assert wide <= 390, f"{path} is {wide} px wide on a 390 px phone"
    assert not cut, f"cut short on a phone: {cut}"
    print(f"{path}: {height} px tall on a phone")


def background_test(op: str, colour: str) -> str:
    """A page function: the app's background compared with ``colour``; false while the page has no app (the theme
    script reloads a new tab once, and between the two loads getComputedStyle(null) would throw, ending the wait)."""
    return (f"() => {{ const app = document.querySelector('.stApp'); "
            f"return !!app && getComputedStyle(app).backgroundColor {op} '{colour}'; }}")


def test_the_chosen_theme_sticks_to_pages_opened_by_url(server):
    """Choose Dark in Streamlit's main menu on one page; a link opened in a new tab is dark too."""
    def background(pg) -> str:
        return pg.evaluate("() => getComputedStyle(document.querySelector('.stApp')).backgroundColor")

    with browser_page(shot=SHOTS / "failure-theme.png") as first:
        first.goto(f"{server}/overview")
        first.get_by_role("heading", name="VGG16 Feature Atlas").wait_for(timeout=120_000)
        light = background(first)
        first.wait_for_function("() => window.vgg16AtlasTheme === true", timeout=90_000)  # the app's script is in
        first.get_by_role("button", name="Main menu").click()
        first.get_by_test_id("stMainMenuItem-theme-Dark").click()
        first.keyboard.press("Escape")
        first.wait_for_function(background_test("!=", light), timeout=30_000)
        dark = background(first)
        # the app's script copies the choice to its shared key a moment after the click (a deadline, not a sleep:
        # a fixed 1.5 s was once too short on a busy machine)
        first.wait_for_function("() => /dark/i.test((JSON.parse(localStorage.getItem('vgg16-atlas-theme') || "
                                "'null') || {}).value || '')", timeout=30_000)
        second = first.context.new_page()
        second.goto(f"{server}/gallery?layer=conv5_1")
        second.get_by_role("heading", name="Layer gallery").wait_for(timeout=120_000)
        second.wait_for_function(background_test("==", dark), timeout=60_000)  # across its one reload
        second.screenshot(path=str(SHOTS / "dark-gallery.png"))
    assert light != dark
