"""The internals, inference and playground pages in real headless Chromium.

The server, browser and page fixtures are tests/browser/conftest.py's: the tiny
random model behind a strict Content-Security-Policy, and a page whose console
errors (CSP violations included) and uncaught exceptions fail the test.
Screenshots go to /tmp/shots/lab-*.png.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from helpers import heatmap_cells, hover_cell
from model.nets.gpt2 import GPT

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)  # a busy laptop is slow; a hang still fails
SHOTS = Path("/tmp/shots")


def shot(pg: Page, name: str) -> None:
    pg.screenshot(path=str(SHOTS / f"lab-{name}.png"), full_page=True)


def set_range(pg: Page, selector: str, value: str) -> None:
    """Move a slider as a user does: the value changes and an input event follows."""
    pg.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                        value)


def values(pg: Page) -> list[str]:
    return pg.locator("#inf-bars button.lab-bar .lab-bar-value").all_inner_texts()


# ---------------------------------------------------------------- inference

def test_inference_bars_follow_the_settings(page: Page) -> None:
    page.goto("/inference?prompt=Once%20upon%20a%20time")
    bars = page.locator("#inf-bars button.lab-bar")
    bars.first.wait_for()
    assert bars.count() == 10
    assert page.locator("#inf-entropy").inner_text().endswith("nats")
    before = values(page)

    set_range(page, "#inf-temperature", "0.3")
    expect(page.locator("#inf-bars button.lab-bar .lab-bar-value")).not_to_have_text(before)
    expect(page).to_have_url(re.compile(r"[?&]temperature=0\.3(&|$)"))  # the demo is a link
    assert page.locator("output[for=inf-temperature]").inner_text() == "0.30"

    set_range(page, "#inf-top_k", "3")
    page.locator("#inf-bars button.lab-bar.cut").nth(6).wait_for()
    assert page.locator("#inf-bars button.lab-bar.cut").count() == 7  # ranks 4 to 10 greyed out
    assert page.locator("#inf-bars button.lab-bar").nth(3).locator(".lab-bar-value").inner_text() == "cut by top-k"
    assert page.locator("#inf-support").inner_text() == "3"
    shot(page, "inference-topk")


def test_inference_click_and_keys(sized: Page) -> None:
    page = sized
    page.goto("/inference?prompt=Once%20upon%20a%20time&seed=5")
    history = page.locator("#inf-history tr")
    third = page.locator("#inf-bars button.lab-bar").nth(2)
    third.wait_for()
    token = third.locator(".lab-bar-token").inner_text()
    third.click()
    history.first.wait_for()
    assert history.count() == 1 and "chosen by hand" in history.first.inner_text()
    assert page.locator("#inf-sofar .lab-new").inner_text() == token

    page.locator("h1").click()  # focus out of the bars: keys go to the page
    page.keyboard.press("ArrowRight")
    expect(history).to_have_count(2)
    assert "the most likely" in history.first.inner_text()

    page.keyboard.press(" ")
    expect(history).to_have_count(3)
    assert "sampled, seed 7" in history.first.inner_text()  # seed 5 + step 2
    sampled = history.first.locator("td").nth(1).inner_text()

    page.keyboard.press("ArrowLeft")
    expect(history).to_have_count(2)
    page.keyboard.press(" ")  # the same seed and settings: the same token
    expect(history).to_have_count(3)
    assert history.first.locator("td").nth(1).inner_text() == sampled
    assert "seed 5 + step 3 = 8" in page.locator("#inf-seed-now").inner_text()
    # the steps are in the URL: a shared link (or a reload) shows the same text and history
    expect(page).to_have_url(re.compile(r"[?&]steps=h\d+t100\.g\d+t100\.s\d+t100r7(&|$)"))
    text = page.locator("#inf-sofar").inner_text()
    page.reload()
    expect(history).to_have_count(3)
    assert page.locator("#inf-sofar").inner_text() == text

    page.locator("#inf-prompt").press("End")
    page.keyboard.press(" ")  # typing in the prompt is typing, not a step (and starts over)
    assert page.locator("#inf-prompt").input_value() == "Once upon a time "
    expect(history).to_have_count(0)
    shot(page, "inference")


# ---------------------------------------------------------------- internals

def test_internals_heatmap_and_logit_lens(page: Page) -> None:
    page.goto("/internals")
    page.locator("#int-lens .lens-row").first.wait_for()
    page.locator("#int-prompt").fill("The cat sat on the mat")
    expect(page.locator("#int-lens [role=columnheader]")).to_have_count(1 + 6)
    assert page.locator("#int-lens .lens-row").count() == 3  # the embeddings and after each of 2 blocks
    assert page.locator("#int-lens .lens-row").last.locator("[role=rowheader]").text_content().endswith(": the prediction")
    expect(page.locator("#int-lens [role=cell]")).to_have_count(3 * 6)  # drawn as SVG, read as a table
    # the server draws every figure: of the block's heads, the checked one's heatmap shows
    attn = page.locator("#int-attn .attn-map:visible")
    expect(attn).to_have_count(1)
    assert heatmap_cells(attn) == 6 * 7 // 2  # a lower triangle of 6 tokens
    expect(page.locator("#int-attn .attn-map")).to_have_count(4)  # all 4 heads, drawn once
    assert heatmap_cells(page.locator("#int-norms svg")) == 3 * 6
    assert page.locator("#int-neurons tbody tr").count() == 2
    expect(page).to_have_url(re.compile(r"prompt=The\+cat\+sat"))

    hover_cell(page, attn, 5, 1)
    readout = page.locator("#int-attn-readout").inner_text()
    assert readout.startswith("Block 1, head 0: “ mat” (position 5)") and "“ cat” (position 1)" in readout

    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.locator("label.lab-head").nth(2).click()
    expect(attn).to_have_attribute("aria-label", "Attention pattern of block 1, head 2")
    expect(page).to_have_url(re.compile(r"[?&]head=2(&|$)"))
    assert not [u for u in requests if "/partials/" in u or "/api/" in u]  # switching heads asks the model nothing
    page.select_option("#int-layer", "0")
    expect(attn).to_have_attribute("aria-label", "Attention pattern of block 0, head 2")
    attn.focus()  # the keyboard reads it too: arrows move a marked cell
    page.keyboard.press("ArrowUp")  # the first key marks the bottom-left cell
    expect(page.locator("#int-attn-readout")).to_contain_text("Block 0, head 2: “ mat” (position 5) gives")
    page.keyboard.press("ArrowUp")
    expect(page.locator("#int-attn-readout")).to_contain_text("“ the” (position 4) gives")

    page.locator("#int-tokens .chip").nth(1).click()  # " cat": the neurons follow (the server renders them)
    expect(page.locator("#int-neurons caption")).to_contain_text("“ cat”")
    expect(page.locator("#int-lens .lens-pos.chosen")).to_have_attribute("data-pos", "1")
    expect(page).to_have_url(re.compile(r"[?&]pos=1(&|$)"))
    page.locator("#int-lens .lens-pos[data-pos='2']").click()  # a token along the lens's top picks it too
    expect(page.locator("#int-neurons caption")).to_contain_text("(position 2)")
    expect(page.locator("#int-lens .lens-pos.chosen")).to_have_attribute("data-pos", "2")
    page.select_option("#int-pos", "3")  # the select picks a position too
    expect(page.locator("#int-neurons caption")).to_contain_text("(position 3)")
    expect(page).to_have_url(re.compile(r"[?&]pos=3(&|$)"))
    assert heatmap_cells(attn) == 6 * 7 // 2  # the heatmaps stay drawn
    shot(page, "internals")

    page.locator("#int-prompt").fill("")  # no prompt: a message, and no heatmaps of the old one beside it
    expect(page.locator("#int-forward .message")).to_contain_text("Type a prompt")
    expect(page.locator("#int-attn .attn-map")).to_have_count(0)
    expect(page.locator("#int-attn-readout")).to_have_text(re.compile(r"^Hover over a cell"))  # no stale sentence
    expect(page.locator("#int-norms svg")).to_have_count(0)
    expect(page.locator('[data-figure-png="#int-attn .attn-map"]')).to_be_hidden()


def test_internals_head_finder_opens_a_heads_heatmap(page: Page) -> None:
    page.goto("/internals?prompt=The+cat+sat")
    page.locator("#int-lens .lens-row").first.wait_for()
    page.get_by_role("button", name="Measure on random words said twice").click()
    rows = page.locator("#int-heads tbody tr")
    expect(rows).to_have_count(2 * 4)  # every head of the tiny model, ranked
    assert "the built-in probe" in page.locator("#int-heads").inner_text()
    pick = rows.nth(1).locator("button")
    layer, head = pick.get_attribute("data-layer"), pick.get_attribute("data-head")
    pick.click()
    # the probe becomes the prompt, and the chosen head's heatmap is drawn over it
    expect(page.locator("#int-prompt")).to_have_value(
        re.compile(r"^(\w+ ){31}\w+"))
    attn = page.locator("#int-attn .attn-map:visible")
    expect(attn).to_have_attribute("aria-label", f"Attention pattern of block {layer}, head {head}")
    expect(page).to_have_url(re.compile(rf"[?&]head={head}(&|$)"))
    expect(attn.locator("[data-r]")).to_have_count(62)
    assert heatmap_cells(attn) == 62 * 63 // 2  # 62 tokens: a lower triangle
    page.select_option("#int-sort", "first_token")
    expect(page.locator("#int-heads th.sorted")).to_have_text("first token")
    shot(page, "internals-heads")


# ---------------------------------------------------------------- playground

def test_playground_streams_and_reports(page: Page) -> None:
    page.goto("/playground?max_new_tokens=4&seed=3")
    page.get_by_role("button", name="Generate").click()
    finish = page.locator("#pg-one [data-stat=finish]")
    expect(finish).to_contain_text("written")
    assert page.locator("#pg-output .chip").count() >= 1
    assert page.locator("#pg-output .lab-prompt-text").inner_text() == "Once upon a time"
    assert int(page.locator("#pg-one [data-stat=tokens]").inner_text()) >= 1
    assert float(page.locator("#pg-one [data-stat=speed]").inner_text()) > 0
    assert page.locator("#pg-one [data-stat=seed]").inner_text() == "3"
    assert "prompt tokens" in finish.inner_text()
    page.locator("#pg-output .chip").first.hover()
    assert "chance" in page.locator("#pg-detail").inner_text()
    assert page.get_by_role("button", name="Stop").is_disabled()
    shot(page, "playground")


def test_playground_stop_aborts_the_stream(page: Page, monkeypatch: pytest.MonkeyPatch) -> None:
    page.goto("/playground?max_new_tokens=40")
    plain = GPT.forward

    def slow_forward(self, *args, **kwargs):  # the server runs in this process: slow its model down
        time.sleep(0.5)
        return plain(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", slow_forward)
    page.get_by_role("button", name="Generate").click()
    page.locator("#pg-output .chip").first.wait_for()
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#pg-one [data-stat=finish]")).to_contain_text("Stopped by you")
    n = page.locator("#pg-output .chip").count()
    assert n < 40
    page.wait_for_timeout(500)
    assert page.locator("#pg-output .chip").count() == n  # nothing more arrives
    assert page.get_by_role("button", name="Generate").is_enabled()


def test_playground_preset_and_compare_temperatures(page: Page) -> None:
    page.goto("/playground")
    page.get_by_role("button", name="English → French").click()
    expect(page.locator("#pg-note")).to_contain_text("can at best copy the format")
    assert page.locator("#pg-prompt").input_value().endswith("cat =>")
    assert page.locator("#pg-stop").input_value() == "line"
    expect(page).to_have_url(re.compile(r"[?&]stop=line(&|$)"))
    page.locator("#pg-max").fill("2")
    page.get_by_role("button", name="Compare temperatures").click()
    columns = page.locator("#pg-columns .lab-column")
    expect(columns).to_have_count(4)
    for i in range(4):
        # four streams at once: slow on a busy two-core laptop. "Waiting for a turn…" and "Writing…" have no full stop
        expect(columns.nth(i).locator("[data-stat=finish]")).to_contain_text(".", timeout=90_000)
    assert columns.count() == 4
    assert columns.first.locator("h3").inner_text().startswith("Temperature 0")
    shot(page, "playground-compare")


def test_playground_preset_is_in_the_link_and_a_new_run_clears_the_hover_box(sized: Page) -> None:
    page = sized
    page.goto("/playground")
    page.get_by_role("button", name="A repeated refrain").click()
    expect(page).to_have_url(re.compile(r"[?&]preset=refrain(&|$)"))
    page.locator("#pg-seed").fill("7")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#pg-one [data-stat=finish]")).to_contain_text(".", timeout=60_000)
    first = page.locator("#pg-output").inner_text()
    page.locator("#pg-output .chip").first.hover()
    expect(page.locator("#pg-detail")).to_contain_text("chance")
    # the link restores the preset (its note, its button) and the seed gives the same text
    page.goto(page.url)
    expect(page.get_by_role("button", name="A repeated refrain")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#pg-note")).to_contain_text("copies it a third time")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#pg-one [data-stat=finish]")).to_contain_text(".", timeout=60_000)
    assert page.locator("#pg-output").inner_text() == first
    page.locator("#pg-output .chip").first.hover()
    expect(page.locator("#pg-detail")).to_contain_text("chance")
    page.locator("h1").hover()
    page.get_by_role("button", name="Generate").click()  # a new run: the box no longer describes an old token
    expect(page.locator("#pg-detail")).to_contain_text("Hover over a generated token")
    page.locator("#pg-prompt").fill("Something else")  # an edited prompt is no longer the preset
    expect(page).not_to_have_url(re.compile(r"[?&]preset="))
