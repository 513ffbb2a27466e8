"""Train a tiny model now, in Chromium: the teacher presses Train, the curve and the first samples arrive by
Server-Sent Events, a second screen joins the running job, Stop ends it, and the model opens in the stepper.
Screenshot: /tmp/shots/live-training.png (the projector's size)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from conftest import SHOTS, open_page

pytestmark = pytest.mark.browser


def test_train_watch_stop_and_open_the_model(browser, server_url: str, sizes: dict) -> None:
    pages = open_page(browser, server_url, sizes["projector"])
    page: Page = next(pages)
    page.goto("/loss")
    expect(page.locator("#live-state")).to_contain_text("No model is training")
    page.get_by_label("The Wonderful Wizard of Oz", exact=False).check()
    page.locator("#live-minutes").select_option("1")
    page.get_by_role("button", name="Train").click()

    expect(page.locator("#live-state")).to_contain_text("Wizard of Oz")
    # the curve grows as points arrive: more than the untrained one
    expect(page.locator("#live-chart")).to_be_visible(timeout=60_000)
    expect(page.locator("#live-chart .column")).not_to_have_count(1, timeout=60_000)
    expect(page.locator(".live-sample figcaption").first).to_have_text("after 0 steps")

    # a second screen (the class's, a reload) joins the same run, without its own Train
    phone_pages = open_page(browser, server_url, sizes["phone"])
    phone: Page = next(phone_pages)
    phone.goto("/loss#live")
    expect(phone.locator("#live-state")).to_contain_text("Wizard of Oz")
    expect(phone.locator("#live-chart")).to_be_visible()

    # the 50-step sample is in its own column, beside the untrained one
    expect(page.locator(".live-sample figcaption").nth(1)).to_have_text("after 50 steps", timeout=60_000)
    page.screenshot(path=str(SHOTS / "live-training.png"), full_page=True)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#live-state")).to_contain_text("Stopped", timeout=30_000)
    step = int(re.sub(r"\D", "", page.locator(".live-figures dd").first.inner_text()))
    assert step >= 50
    expect(phone.locator("#live-state")).to_contain_text("Stopped")

    # the model as trained so far is one of its own: the stepper opens on it
    page.get_by_role("link", name="Inference stepper").click()
    expect(page.locator(".header-model")).to_contain_text(f"step{step}")
    for gen in (pages, phone_pages):  # each closes its page and fails on any console error it saw
        next(gen, None)
