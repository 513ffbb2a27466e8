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

from model.gpt2 import GPT

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


def test_inference_click_and_keys(page: Page) -> None:
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

    page.locator("#inf-prompt").press("End")
    page.keyboard.press(" ")  # typing in the prompt is typing, not a step (and starts over)
    assert page.locator("#inf-prompt").input_value() == "Once upon a time "
    expect(history).to_have_count(0)
    shot(page, "inference")


# ---------------------------------------------------------------- internals

def test_internals_heatmap_and_logit_lens(page: Page) -> None:
    page.goto("/internals")
    page.locator("#int-lens tbody tr").first.wait_for()
    page.locator("#int-prompt").fill("The cat sat on the mat")
    expect(page.locator("#int-lens thead th")).to_have_count(1 + 6)
    assert page.locator("#int-lens tbody tr").count() == 3  # the embeddings and after each of 2 blocks
    assert page.locator("#int-lens tbody tr").last.locator("th").inner_text().endswith(": the prediction")
    assert page.locator("#int-attn rect[data-r]").count() == 6 * 7 // 2  # a lower triangle of 6 tokens
    assert page.locator("#int-norms rect[data-r]").count() == 3 * 6
    assert page.locator("#int-neurons tbody tr").count() == 2
    expect(page).to_have_url(re.compile(r"prompt=The\+cat\+sat"))

    page.locator("#int-attn rect[data-r='5'][data-c='1']").hover()
    readout = page.locator("#int-attn-readout").inner_text()
    assert "“ mat” (position 5)" in readout and "“ cat” (position 1)" in readout

    page.locator("label.lab-head").nth(2).click()
    assert page.locator("#int-attn").get_attribute("aria-label").endswith("head 2")
    expect(page).to_have_url(re.compile(r"[?&]head=2(&|$)"))
    page.select_option("#int-layer", "0")
    expect(page.locator("#int-attn")).to_have_attribute("aria-label", "Attention pattern of block 0, head 2")
    page.locator("#int-attn").focus()  # the keyboard reads it too: arrows move a marked cell
    page.keyboard.press("ArrowUp")  # the first key marks the bottom-left cell
    expect(page.locator("#int-attn-readout")).to_contain_text("Block 0, head 2: “ mat” (position 5) gives")
    page.keyboard.press("ArrowUp")
    expect(page.locator("#int-attn-readout")).to_contain_text("“ the” (position 4) gives")

    page.locator("#int-tokens .chip").nth(1).click()  # " cat": the neurons follow
    assert "“ cat”" in page.locator("#int-neurons caption").inner_text()
    expect(page).to_have_url(re.compile(r"[?&]pos=1(&|$)"))
    shot(page, "internals")


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
    page.get_by_role("button", name="English → French (few-shot)").click()
    assert page.locator("#pg-prompt").input_value().endswith("cat =>")
    assert page.locator("#pg-stop").input_value() == "line"
    expect(page).to_have_url(re.compile(r"[?&]stop=line(&|$)"))
    page.locator("#pg-max").fill("2")
    page.get_by_role("button", name="Compare temperatures").click()
    columns = page.locator("#pg-columns .lab-column")
    expect(columns).to_have_count(4)
    for i in range(4):
        # four streams at once: slow on a busy two-core laptop. "Writing…" has no full stop
        expect(columns.nth(i).locator("[data-stat=finish]")).to_contain_text(".", timeout=90_000)
    assert columns.count() == 4
    assert columns.first.locator("h3").inner_text().startswith("Temperature 0")
    shot(page, "playground-compare")
