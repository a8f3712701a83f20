"""The README is a front page and the docs hold together: the first screen says what to run, where to open it and
which Python, and shows a picture; every relative link and picture of the README and docs/ exists, and every
``#anchor`` into a docs page names one of its headings."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")

pytestmark = pytest.mark.unit


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def test_the_readmes_first_screen():
    lines = (ROOT / "README.md").read_text().splitlines()
    first = "\n".join(lines[:25])
    assert len(lines) <= 170, f"the README has {len(lines)} lines: the rest belongs in docs/"
    pictures = LINK.findall("\n".join(lines[:15]))
    assert any(p.endswith(".png") for p in pictures), "no screenshot in the README's first 15 lines"
    assert "make run" in first and "http://localhost:8501" in first, "the first screen says what to run and where"
    assert re.search(r"Python 3\.\d+", first), "the first screen names the Python version"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_picture_exists(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: outside links are not checked here
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to what is not there: {broken}"
