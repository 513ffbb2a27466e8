"""The pages in headless Chromium: typing, stepping, searching, hovering; no console errors or CSP violations.

Screenshots go to /tmp/shots/ for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)
SHOTS = Path("/tmp/shots")


def test_every_page_loads_cleanly(page: Page):
    for path, name in (("/", "overview"), ("/data", "data"), ("/tokenizer", "tokenizer"), ("/loss", "loss")):
        page.goto(path)
        expect(page.locator("nav.next-stage a")).to_contain_text("Next stage")
        if name == "tokenizer":  # the parts htmx loads after the page
            expect(page.locator("#compare-result .count")).to_have_count(3)
            expect(page.locator("[data-bpe-status]")).to_contain_text("Start")
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_tokenizer_typing_updates_chips_and_counts(page: Page):
    page.goto("/tokenizer")
    page.get_by_label("Show token ids").check()
    page.locator("#tok-text").fill("Hello world")
    chips = page.locator("#tok-result .chip")
    expect(chips).to_have_count(2)
    expect(page.locator("#tok-result .tid")).to_have_text(["15496", "995"])
    expect(page.locator('[data-count="tokens"]')).to_have_text("2")
    expect(page.locator('[data-count="characters"]')).to_have_text("11")
    # the state is in the URL, so the link can be shared
    page.wait_for_url(re.compile(r"[?&]text=Hello\+world(&|$)"))
    assert "ids=1" in page.url
    # focusing a chip (keyboard) fills the detail panel; arrow keys move on
    chips.first.focus()
    page.keyboard.press("ArrowRight")
    expect(chips.nth(1)).to_be_focused()
    expect(page.locator("#tok-detail")).to_contain_text("id 995")
    page.screenshot(path=str(SHOTS / "tokenizer-typed.png"))


def test_tokenizer_escapes_typed_html(page: Page):
    typed = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    page.goto("/tokenizer")
    page.locator("#tok-text").fill(typed)
    expect(page.locator('[data-count="characters"]')).to_have_text(str(len(typed)))
    assert page.locator("#tok-result img, #tok-result script").count() == 0
    # the chips, without their ids and whitespace marks, read back exactly what was typed
    shown = page.locator("#tok-result .tokens").evaluate(
        "e => { const c = e.cloneNode(true); c.querySelectorAll('.tid, .ws-mark').forEach(x => x.remove());"
        " return c.textContent; }")
    assert shown == typed


def test_bpe_step_back_and_play(sized: Page):
    page = sized
    page.goto("/tokenizer?text=lower+lowest")
    n_tokens = page.locator('[data-count="tokens"]').inner_text()
    status = page.locator("[data-bpe-status]")
    expect(status).to_contain_text("Start: 12 bytes")
    before = page.locator(".bpe-words .chip").count()
    page.get_by_role("button", name="Step ▶").click()
    expect(status).to_contain_text("Step 1 of")
    expect(page.locator(".bpe-words .chip.merged")).not_to_have_count(0)
    assert page.locator(".bpe-words .chip").count() < before
    assert page.locator("[data-bpe-slider]").input_value() == "1"
    page.get_by_role("button", name="◀ Back").click()
    expect(status).to_contain_text("Start")
    page.get_by_role("button", name="Tokens »").click()
    expect(status).to_contain_text(f"Done: {n_tokens} tokens")
    page.screenshot(path=str(SHOTS / "bpe.png"))
    # the step is part of the link: opened elsewhere, the story stands at the same merge
    page.get_by_role("button", name="« Bytes").click()
    page.get_by_role("button", name="Step ▶").click()
    page.get_by_role("button", name="Step ▶").click()
    expect(page).to_have_url(re.compile(r"[?&]bpe=2(&|$)"))
    page.goto(page.url)
    expect(status).to_contain_text("Step 2 of")
    # Play steps on by itself and Pause holds it; the slider moves the story
    play = page.locator("#bpe-play")
    play.click()
    expect(status).to_contain_text("Step 4 of")
    expect(play).to_have_text("Pause")
    play.click()
    expect(play).to_have_text("▶ Play")
    held = status.inner_text()
    page.wait_for_timeout(1500)
    assert status.inner_text() == held
    page.locator("#bpe-slider").fill("1")
    expect(status).to_contain_text("Step 1 of")
    expect(page).to_have_url(re.compile(r"[?&]bpe=1(&|$)"))
    page.locator("#tok-text").fill("lower")  # a new text starts from its bytes
    expect(status).to_contain_text("Start: 5 bytes")
    expect(page).not_to_have_url(re.compile(r"[?&]bpe="))


def test_vocab_search_and_paging(page: Page):
    page.goto("/tokenizer")
    search = page.locator("#vocab-q")
    search.fill("cat")
    expect(page.locator("#vocab-result .hint")).to_contain_text("contain “cat”")
    search.fill(" the")
    expect(page.locator("#vocab-result .vid").first).to_have_text("262")
    expect(page.locator("#vocab-result .vocab-grid li").first).to_contain_text("·the")
    page.get_by_role("button", name="Next →").click()
    expect(page.locator("#vocab-result")).to_contain_text("page 2 of")
    page.wait_for_url(re.compile(r"vpage=2"))


def test_compare_shows_three_vocabularies(page: Page):
    page.goto("/tokenizer?text=internationalization")
    counts = page.locator("#compare-result .count")
    expect(counts).to_have_count(3)
    assert [int(t.split()[0]) for t in counts.all_inner_texts()][0] >= 2


def test_loss_view_colours_tokens(page: Page):
    page.goto("/loss")
    chips = page.locator("#loss-result .tokens .chip")
    expect(chips.first).to_be_visible()
    classes = chips.evaluate_all("cs => cs.map(c => c.className)")
    assert classes and all(re.search(r"\bloss-[0-5]\b", c) for c in classes)
    colours = set(chips.evaluate_all("cs => cs.map(c => getComputedStyle(c).backgroundColor)"))
    assert "rgba(0, 0, 0, 0)" not in colours
    chips.nth(2).hover()
    expect(page.locator("#loss-detail")).to_contain_text("p = ")
    page.locator("#loss-text").fill("The cat sat on the mat.")
    expect(chips).to_have_count(7)
    expect(page.locator('[data-stat="perplexity"]')).to_have_text(re.compile(r"^[\d.]+$"))
    page.screenshot(path=str(SHOTS / "loss-typed.png"), full_page=True)


def test_data_chart_is_drawn(page: Page):
    page.goto("/data")
    expect(page.locator("svg.chart polyline.series")).to_have_count(2)
    expect(page.locator(".chart-readout")).to_contain_text("tokens seen")
    last = page.locator(".chart-readout").inner_text()
    page.locator("svg.chart").focus()  # the arrow keys start from the last column, the one read out at first
    page.keyboard.press("ArrowLeft")
    expect(page.locator(".chart-readout")).not_to_have_text(last)
    expect(page.locator("svg.chart .column.at")).to_have_count(1)
    page.keyboard.press("ArrowRight")
    expect(page.locator(".chart-readout")).to_have_text(last)
    expect(page.locator("#data-stream .chip.eot").first).to_be_visible()


def test_presentation_mode_persists(page: Page):
    page.goto("/tokenizer")
    toggle = page.get_by_role("button", name="Presentation mode")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(page.locator("html")).to_have_class("present")
    assert "present=1" in page.url
    page.goto("/loss")  # no ?present in this URL: localStorage remembers
    expect(page.locator("html")).to_have_class("present")
    assert "present=1" in page.url
    page.screenshot(path=str(SHOTS / "loss-present.png"))
    page.goto("/tokenizer")
    page.screenshot(path=str(SHOTS / "tokenizer-present.png"))
    page.get_by_role("button", name="Presentation mode").click()
    expect(page.locator("html")).not_to_have_class("present")
    assert "present=" not in page.url


def test_small_screen(browser, server_url: str):
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=server_url)
    pg = context.new_page()
    pg.goto("/tokenizer")
    width = pg.evaluate("document.documentElement.scrollWidth")
    pg.screenshot(path=str(SHOTS / "tokenizer-phone.png"))
    context.close()
    assert width <= 390
