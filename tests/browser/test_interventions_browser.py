"""Switching parts off and activation patching in real headless Chromium (tests/browser/conftest.py's server:
the tiny random model, 2 blocks of 4 heads, behind a strict Content-Security-Policy). Screenshots go to
/tmp/shots/interventions-*.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)
SHOTS = Path("/tmp/shots")
PROMPT = "Tom and his dog went to the park. Tom threw the ball and the dog"


def open_at(browser, server_url: str, viewport: dict):
    context = browser.new_context(viewport=viewport, base_url=server_url)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return context, pg, problems


def test_a_click_on_a_head_changes_the_bars_and_the_link_restores_the_set(browser, server_url: str, sizes) -> None:
    context, page, problems = open_at(browser, server_url, sizes["projector"])
    page.goto("/internals")
    now = page.locator("#int-ablate .ab-bars .ab-now-p")
    was = page.locator("#int-ablate .ab-bars tbody tr td.r:not(.ab-now-p):not(.ab-change)")
    now.first.wait_for()
    before_now, before_was = now.all_inner_texts(), was.all_inner_texts()
    assert before_now == before_was  # nothing is off yet: both columns are the model's own
    page.locator('#int-ablate button.ab-part[title="head 2 of block 1"]').click()
    expect(page.locator('#int-ablate button.ab-part[title="head 2 of block 1"]')).to_have_attribute("aria-pressed", "true")
    expect(now).not_to_have_text(before_now)
    assert was.all_inner_texts()[:3] == before_was[:3]  # the unchanged bars stay beside
    expect(page).to_have_url(re.compile(r"[?&]off=h1\.2(&|$)"))
    # a neuron from the table of active neurons, and the shown head from under the heatmap
    page.locator("#int-neurons button.ab-neuron").first.click()
    expect(page).to_have_url(re.compile(r"off=h1\.2%2Cn\d\.\d+"))
    url = page.url
    page.screenshot(path=str(SHOTS / "interventions-internals.png"), full_page=True)

    page.goto(url)  # the link restores the set
    expect(page.locator('#int-ablate button.ab-part[title="head 2 of block 1"]')).to_have_attribute("aria-pressed", "true")
    assert page.locator("#int-ablate .ab-item").count() == 2
    # and the stepper runs with it
    page.locator("#int-ablate a", has_text="Step through with these off").click()
    expect(page.locator(".ab-note")).to_contain_text("block 1 head 2")
    page.locator("#inf-bars button.lab-bar").first.wait_for()
    assert "off=h1.2" in page.url
    context.close()
    assert not problems, problems


def test_a_click_on_a_head_thumbnail_adds_it_to_the_set(browser, server_url: str, sizes) -> None:
    context, page, problems = open_at(browser, server_url, sizes["projector"])
    page.goto("/internals?off=n0.3")
    now = page.locator("#int-ablate .ab-bars .ab-now-p")
    now.first.wait_for()
    before = now.all_inner_texts()
    thumb = page.locator('.lab-head-box:has(svg[data-head="2"]) button.ab-thumb-off')
    thumb.click()  # block 1, the one shown by default
    expect(page).to_have_url(re.compile(r"[?&]off=n0\.3%2Ch1\.2(&|$)"))
    expect(thumb).to_have_attribute("aria-pressed", "true")
    in_grid = page.locator('#int-ablate button.ab-part[title="head 2 of block 1"]')
    expect(in_grid).to_have_attribute("aria-pressed", "true")
    expect(now).not_to_have_text(before)
    page.screenshot(path=str(SHOTS / "interventions-thumbnail-off.png"))
    # the thumbnails show the block picked: head 2 of block 0 is on, and its click adds it too
    page.select_option("#int-layer", "0")
    expect(thumb).to_have_attribute("aria-pressed", "false")
    thumb.click()
    expect(page).to_have_url(re.compile(r"[?&]off=n0\.3%2Ch1\.2%2Ch0\.2(&|$)"))
    expect(thumb).to_have_attribute("aria-pressed", "true")
    context.close()
    assert not problems, problems


def test_the_patching_grid_scrolls_in_its_own_box_on_a_phone(browser, server_url: str, sizes) -> None:
    context, page, problems = open_at(browser, server_url, sizes["phone"])
    page.goto("/internals")
    grid = page.locator("#pt-form .pt-grid")
    grid.wait_for()  # loaded after the page
    box = page.locator("#pt-form .pt-box")
    sizes_ = box.evaluate("b => [b.scrollWidth, b.clientWidth, document.documentElement.scrollWidth, window.innerWidth]")
    scroll_w, client_w, page_w, viewport_w = sizes_
    assert scroll_w > client_w  # the grid is wider than its box, which scrolls
    assert page_w <= viewport_w  # the page itself does not
    page.locator("#pt-form button[value=moves]").click()
    expect(page.locator("#pt-corrupted")).to_have_value(re.compile("Sue"))
    expect(page).to_have_url(re.compile(r"corrupted=Once"))
    page.screenshot(path=str(SHOTS / "interventions-patch-phone.png"), full_page=True)
    context.close()
    assert not problems, problems


def test_a_click_on_a_grid_cell_opens_the_stepper_with_that_patch(browser, server_url: str, sizes) -> None:
    context, page, problems = open_at(browser, server_url, sizes["projector"])
    page.goto("/internals")
    page.locator("#pt-form .pt-grid").wait_for()  # loaded after the page
    corrupted = page.locator("#pt-corrupted").input_value()
    # the last block at the last token: the clean stream there has read the other name
    last = page.locator("#pt-form .pt-grid tbody tr").last.locator("a.pt-cell").last
    block, position = re.search(r"block (\d+), token (\d+)", last.get_attribute("title")).groups()
    last.click()
    expect(page).to_have_url(re.compile(rf"/inference\?.*patch={block}\.{position}(&|$)"))
    expect(page.locator(".pt-note")).to_contain_text(f"at token {position}")
    expect(page.locator(".pt-note")).to_contain_text(f"block {block}")
    bars = page.locator("#inf-bars")
    bars.locator("button.lab-bar").first.wait_for()
    patched = bars.inner_text()
    page.screenshot(path=str(SHOTS / "interventions-patched-stepper.png"), full_page=True)
    # the same prompt without the patch has other bars
    page.locator(".pt-note a", has_text="Run without the patch").click()
    expect(page.locator(".pt-note")).to_have_count(0)
    bars.locator("button.lab-bar").first.wait_for()
    assert page.locator("#inf-prompt").input_value() == corrupted
    assert bars.inner_text() != patched
    # back on the patched stepper, a step keeps the patch in the link
    page.go_back()
    expect(page.locator(".pt-note")).to_contain_text(f"block {block}")
    page.locator("#inf-form button[value=greedy]").click()
    expect(page).to_have_url(re.compile(rf"(?=.*[?&]steps=g\d+)(?=.*[?&]patch={block}\.{position}(&|$))"))
    context.close()
    assert not problems, problems
