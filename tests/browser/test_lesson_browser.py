"""What a teacher met in a full lesson (issue 22), at the size where each was seen: the projector (1366×768)
and a phone (390×844), in real headless Chromium.

Uses tests/browser/conftest.py's live server (the tiny random model, strict CSP); screenshots go to
/tmp/shots/lesson-*.png.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import anyio
import pytest
from playwright.sync_api import Page, expect

from app.schemas import answers as an
from app.views import writing
from model.probes import incontext

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)  # a busy laptop is slow; a hang still fails
SHOTS = Path("/tmp/shots")


# the sizes where each stumble was seen: conftest.py's `sized` fixture, at one of its sizes
PROJECTOR = pytest.mark.parametrize("sized", ["projector"], indirect=True)
PHONE = pytest.mark.parametrize("sized", ["phone"], indirect=True)


def shot(pg: Page, name: str) -> None:
    pg.screenshot(path=str(SHOTS / f"lesson-{name}.png"), full_page=True)


# ---------------------------------------------------------------- 2. the stepper after a key press

SETTINGS = [  # each control as a person moves it, and how the page's URL says it moved
    ("#inf-temperature", "0.5", r"temperature=0\.5"),
    ("#inf-seed", "7", r"seed=7"),
    ("#inf-top_k", "20", r"top_k=20"),
    ("#inf-top_p", "0.9", r"top_p=0\.9"),
    ("#inf-n", "15", r"n=15"),
]


def move(pg: Page, selector: str, value: str) -> None:
    """Change a control as a user does: its value, then the input event."""
    pg.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                        value)


@PROJECTOR
@pytest.mark.parametrize("key", ["ArrowRight", " "], ids=["greedy", "sample"])
def test_a_key_press_takes_one_step_and_the_settings_take_none(sized: Page, key: str) -> None:
    page = sized
    page.goto("/inference?prompt=Once+upon+a+time")
    page.locator("#inf-bars button.lab-bar").first.wait_for()
    page.locator("h1").click()  # keys go to the page
    page.keyboard.press(key)
    history = page.locator("#inf-history tr")
    expect(history).to_have_count(1)
    text = page.locator("#inf-sofar").inner_text()
    for selector, value, in_url in SETTINGS:
        move(page, selector, value)
        expect(page).to_have_url(re.compile(in_url))  # the server has answered the change
        assert page.locator("#inf-sofar").inner_text() == text, selector
        assert history.count() == 1, selector
    # the keys still step, once each
    page.locator("h1").click()
    page.keyboard.press("ArrowRight")
    expect(history).to_have_count(2)
    move(page, "#inf-temperature", "1.5")
    expect(page).to_have_url(re.compile(r"temperature=1\.5"))
    assert history.count() == 2


@PROJECTOR
def test_the_steps_taken_keep_their_chance_when_the_settings_move(sized: Page) -> None:
    page = sized
    page.goto("/inference?prompt=Once+upon+a+time")
    page.locator("#inf-bars button.lab-bar").first.wait_for()
    page.locator("h1").click()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    history = page.locator("#inf-history tr")
    expect(history).to_have_count(2)
    chances = page.locator("#inf-history td:nth-child(4)").all_inner_texts()
    move(page, "#inf-temperature", "2")
    expect(page).to_have_url(re.compile(r"temperature=2"))
    expect(page.locator("#inf-history td:nth-child(4)")).to_have_text(chances)
    expect(history.first).to_contain_text("the most likely (temperature 1)")
    page.reload()  # the link carries each step's settings
    expect(page.locator("#inf-history td:nth-child(4)")).to_have_text(chances)
    shot(page, "inference-history")


# ---------------------------------------------------------------- 1. the opening screen

@PROJECTOR
@pytest.mark.parametrize("present", [False, True], ids=["normal", "presentation"])
def test_the_overview_reads_on_a_projector(sized: Page, present: bool) -> None:
    page = sized
    page.goto("/" + ("?present=1" if present else ""))
    page.wait_for_load_state("networkidle")
    shot(page, f"overview-{'presentation' if present else 'normal'}")
    # the header names the model loaded now
    expect(page.locator(".site-header")).to_contain_text("deepdive-browser")
    # the facts: every value has room (at least a quarter of the list) and is never cut short; the loss's
    # sentence takes a few lines, not one word a line
    facts = page.evaluate("""() => { const dl = document.querySelector('.model-facts').getBoundingClientRect();
        return [...document.querySelectorAll('.model-facts dd')].map(dd => ({text: dd.textContent.trim(),
          share: dd.getBoundingClientRect().width / dl.width, cut: dd.scrollWidth > dd.clientWidth + 1,
          lines: dd.getBoundingClientRect().height / parseFloat(getComputedStyle(dd).lineHeight)})); }""")
    assert any("nats per token" in f["text"] for f in facts)  # the long label is there
    for f in facts:
        assert f["share"] >= 0.25 and not f["cut"], f
        assert f["lines"] <= 5, f
    # the pipeline's boxes keep apart, with room for the arrow between them, and no caption runs out of its box
    boxes = page.evaluate("""() => [...document.querySelectorAll('.pipeline')[0].querySelectorAll('a')].map(a => {
        const r = a.getBoundingClientRect(); return {left: r.left, right: r.right, over: a.scrollWidth > a.clientWidth + 1,
          text: a.textContent.trim().slice(0, 24)}; })""")
    assert [b["text"] for b in boxes if b["over"]] == []
    gaps = [b["left"] - a["right"] for a, b in zip(boxes, boxes[1:])]
    assert min(gaps) >= 12, gaps


# ---------------------------------------------------------------- 8. words

@PROJECTOR
def test_one_token_has_an_id(sized: Page) -> None:
    sized.goto("/tokenizer?q=15496")
    hint = sized.locator("#vocab-result .hint").first
    expect(hint).to_contain_text("1 token contains")
    expect(hint).to_contain_text("(or has id 15496)")


# ---------------------------------------------------------------- 6. chips and presentation mode

@PROJECTOR
def test_newline_and_tab_chips_stay_whole_with_their_ids(sized: Page) -> None:
    sized.goto("/tokenizer?ids=1&text=Line%20one.%0ALine%20two.%0A%0A%09Tabbed")
    sized.locator("#tok-result .chip").first.wait_for()
    chips = sized.evaluate("""() => [...document.querySelectorAll('#tok-result .chip')].map(c => ({
        text: c.textContent, lines: c.getClientRects().length, width: c.getBoundingClientRect().width}))""")
    assert [c["text"] for c in chips if c["lines"] > 1] == []  # ↵ and its id 198 on one line; ↵↵ 628 too
    assert [c["text"] for c in chips if "198" in c["text"] or "628" in c["text"]] == ["↵198", "↵↵628"]
    tab = next(c for c in chips if "197" in c["text"])
    assert tab["width"] < 60, tab  # the → mark and its id, not a tab stop's empty block
    # the text still breaks where its newlines are: "Line two." starts a line of its own
    lines = sized.evaluate("""() => new Set([...document.querySelectorAll('#tok-result .chip')].map(
        c => Math.round(c.getBoundingClientRect().top))).size""")
    assert lines == 3


# ---------------------------------------------------------------- 7. the Playground

# the model's answer when its first token is the stop text: a newline, held back, then the end
DONE = an.DoneEvent(finish_reason="stop", prompt_tokens=12, completion_tokens=1, text="", message=None,
                    timings=an.Timings(tokens_per_second=20.0, first_token_ms=50.0, total_ms=50.0))
NEWLINE = an.TokenEvent(id=198, text="", piece="\n", step=0, prob=0.6, raw_prob=0.6, entropy=1.0, before=[], after=[])


async def drawn(req: writing.PageRequest) -> str:
    async def stream():
        yield NEWLINE
        yield DONE
    return "".join([ev async for ev in writing.page_events(stream(), req, "<|endoftext|>")])


@PROJECTOR
def test_the_playground_says_it_waits_and_when_the_line_ended_at_once(sized: Page) -> None:
    page = sized
    held = []
    page.route("**/playground/generate", lambda route: held.append(route))  # a full room: the turn has not come
    page.goto("/playground?prompt=Human%3A%20Hello!%0AAssistant%3A")
    page.locator("button[data-run=one]").click()
    finish = page.locator("#pg-one [data-stat=finish]")
    expect(finish).to_have_text("Waiting for a turn…")
    while not held:
        page.wait_for_timeout(50)
    # the server's own drawing of that answer, for the request the page made
    req = writing.PageRequest(**held[0].request.post_data_json)
    with ThreadPoolExecutor(1) as thread:  # Playwright's own event loop runs in this one
        body = thread.submit(anyio.run, drawn, req).result()
    held[0].fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)
    expect(finish).to_contain_text("The model ended the Assistant's line at once")
    expect(finish).to_contain_text("1 written")


@PROJECTOR
def test_internals_in_presentation_mode_fits_the_projector(sized: Page) -> None:
    page = sized
    page.goto("/internals?present=1")
    page.locator("#int-neurons tbody tr").first.wait_for()
    # what sticks out past the window, outside any scrolling box: the page would scroll sideways
    wide = page.evaluate("""() => [...document.querySelectorAll('body *')].filter(e => {
        const r = e.getBoundingClientRect(); if (!r.width || r.right <= innerWidth + 1) return false;
        for (let a = e.parentElement; a; a = a.parentElement) if (getComputedStyle(a).overflowX !== 'visible') return false;
        return true; }).slice(0, 8)
        .map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 1366, wide


@PROJECTOR
def test_a_long_texts_heatmap_has_labels_a_projector_shows(sized: Page) -> None:
    page = sized
    probe = incontext.probe_words(30)  # the head finder's probe, as long as the test model's context allows
    page.goto("/internals?" + urlencode({"present": "1", "prompt": probe}))
    page.locator("#int-attn .attn-map:visible .row-label").first.wait_for()
    labels = page.evaluate("""() => [...document.querySelectorAll('#int-attn .row-label')]
        .filter(t => t.closest('svg').getClientRects().length).map(t =>
        t.getScreenCTM().a * parseFloat(getComputedStyle(t).fontSize))""")
    assert len(labels) <= 20, len(labels)  # of 61 tokens every fourth is named; the readout names each cell
    assert min(labels) >= 14, labels  # pixels on the screen, after the map shrank to its panel
