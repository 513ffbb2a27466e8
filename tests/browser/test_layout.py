"""Layout on a classroom projector (1366×768) and on a phone (390×844), in real Chromium.

Uses tests/browser/conftest.py's live server (the tiny random model, strict CSP).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser
PARAGRAPH = ("The quick brown fox jumps over the lazy dog while a rich merchant counts his coins. "
             "Unbelievable tokenization: 你好, naïve café, emoji 🙂 and a URL https://example.org/path?q=1 "
             "end with ---------------------------------------------------------------- dashes.")
# chips split over two lines: a newline chip is meant to break its line, a long chip may break with a mark
SPLIT_CHIPS = """sel => [...document.querySelectorAll(sel)].filter(c =>
    c.getClientRects().length > 1 && !c.classList.contains("long") && !c.textContent.includes("\\n")
  ).map(c => c.textContent)"""


def test_chips_wrap_whole(sized: Page) -> None:
    sized.goto(f"/tokenizer?text={quote(PARAGRAPH)}")
    sized.locator("#tok-result .chip").first.wait_for()
    expect(sized.locator("#compare-result .chip").first).to_be_attached()
    for where in ("#tok-result .chip", "#compare-result .chip", "#bpe-result .chip"):
        assert sized.evaluate(SPLIT_CHIPS, where) == [], where
    # the 64 dashes are two tokens, each short enough to move to the next line whole
    sized.goto(f"/loss?text={quote(PARAGRAPH)}")
    sized.locator("#loss-result .chip").first.wait_for()
    assert sized.evaluate(SPLIT_CHIPS, "#loss-result .chip") == []


def test_a_chip_wider_than_the_line_breaks_with_a_mark(sized: Page) -> None:
    sized.goto(f"/tokenizer?text={quote('x ' + '=' * 65)}")  # " " and 65 "=": one token (id 38093)
    chip = sized.locator("#tok-result .chip.long").first
    chip.wait_for()
    # it moves to a new line whole, and breaks only at its soft hyphens, marked ↩
    style = chip.evaluate("c => { const s = getComputedStyle(c); return [s.display, s.hyphenateCharacter]; }")
    assert style[0] == "inline-block" and "↩" in style[1]
    box = chip.bounding_box()
    line = sized.locator("#tok-result .chip").first.bounding_box()["height"]
    assert box["width"] <= sized.viewport_size["width"]  # never wider than the screen
    wraps = box["height"] > 1.5 * line
    assert wraps == (sized.viewport_size["width"] < 66 * 10)  # only where 66 characters do not fit a line


PAGES = ["/", "/data", "/tokenizer", "/loss", "/internals", "/inference", "/playground"]


@pytest.mark.parametrize("path", PAGES)
def test_no_page_scrolls_sideways(sized: Page, path: str) -> None:
    sized.goto(path)
    sized.wait_for_load_state("networkidle")
    width = sized.viewport_size["width"]
    assert sized.evaluate("document.documentElement.scrollWidth") <= width
    # the header: every stage reachable on screen, and on a phone one short row
    links = sized.locator(".site-header .stages a")
    assert links.count() == 7
    for i in range(7):
        box = links.nth(i).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, i
    header = sized.locator(".site-header").bounding_box()["height"]
    assert header <= (60 if width < 600 else 80)
    # whatever is cut short is a box of its own that scrolls (a wide table), never clipped text in a bar
    cut = sized.evaluate("""() => [...document.querySelectorAll('.lab-bar-value, .lab-bar-own, .model-facts dd')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)""")
    assert cut == []


@pytest.mark.parametrize("present", [False, True], ids=["normal", "presentation"])
def test_the_projector_shows_the_text_and_five_bars_at_once(browser, server_url: str, sizes: dict,
                                                             present: bool) -> None:
    context = browser.new_context(viewport=sizes["projector"], base_url=server_url)
    page = context.new_page()
    page.goto("/inference" + ("?present=1" if present else ""))
    bars = page.locator("#inf-bars button.lab-bar")
    bars.nth(4).wait_for()
    page.screenshot(path=f"/tmp/shots/layout-projector-{present}.png")
    height = sizes["projector"]["height"]
    assert page.locator("#inf-sofar").bounding_box()["y"] + page.locator("#inf-sofar").bounding_box()["height"] <= height
    fifth = bars.nth(4).bounding_box()
    assert fifth["y"] + fifth["height"] <= height
    # the overview's pipeline stays one row (a wrapped row would start with a dangling arrow)
    page.goto("/" + ("?present=1" if present else ""))
    tops = page.evaluate("[...document.querySelectorAll('.pipeline')[0].children].map(li => Math.round(li.getBoundingClientRect().top))")
    assert len(set(tops)) == 1
    # the merge stepper's chips and the head thumbnails are big enough to read from the back
    page.goto("/tokenizer?text=lower" + ("&present=1" if present else ""))
    page.locator(".bpe-words .chip").first.wait_for()
    assert page.locator(".bpe-words .chip").first.bounding_box()["height"] >= 28
    page.goto("/internals" + ("?present=1" if present else ""))
    assert page.locator(".lab-thumb").first.bounding_box()["width"] >= 80
    context.close()
