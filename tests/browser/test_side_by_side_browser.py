"""Two models side by side in real Chromium, on a projector (1366×768) and a phone (390×844): both columns
render, and the page does not scroll sideways. The server holds the tiny random model and, as its second
model, a copy of it under another name; the app's own Content-Security-Policy forbids inline script."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import serve
from playwright.sync_api import Page, expect

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app

pytestmark = pytest.mark.browser
WIDER = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.fixture(scope="module")
def server_url(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Overrides conftest's server: this one has a second model."""
    second = tmp_path_factory.mktemp("side") / "a-second-model-with-a-long-name"
    shutil.copytree(tiny_checkpoint, second)
    settings = Settings(model=str(tiny_checkpoint), threads=1, second_model=str(second))
    with serve(create_app(settings, Engine.load(settings))) as url:
        yield url


def test_inference_shows_both_models_bars(sized: Page) -> None:
    sized.goto("/inference?compare=second&n=5")
    cols = sized.locator("#inf-beside .models-column")
    expect(cols).to_have_count(2)
    for i in range(2):
        expect(cols.nth(i).locator(".lab-bar:not(.rest)")).to_have_count(5)
        expect(cols.nth(i).locator(".lab-bar").first).to_be_visible()
    expect(cols.nth(1).locator("h3")).to_contain_text("a-second-model-with-a-long-name")
    assert sized.evaluate(WIDER) <= 0
    # a step redraws both columns in place
    before = cols.nth(1).locator(".lab-bar").first.get_attribute("aria-label")
    sized.get_by_role("button", name="Take the most likely").click()
    expect(sized.locator("#inf-history tr")).to_have_count(1)
    expect(cols.nth(1).locator(".lab-bar").first).not_to_have_attribute("aria-label", before)
    assert "compare=second" in sized.url
    assert sized.evaluate(WIDER) <= 0


def test_playground_writes_with_both_models(sized: Page) -> None:
    sized.goto("/playground?compare=second&max_new_tokens=6&seed=3")
    sized.get_by_role("button", name="Generate").click()
    cols = sized.locator("#pg-model-columns .lab-column")
    expect(cols).to_have_count(2)
    for i in range(2):
        expect(cols.nth(i).locator("[data-stat=finish]")).to_contain_text("6 written")
        expect(cols.nth(i).locator(".chip").first).to_be_visible()
    # the same weights, prompt, settings and seed: the same text in both columns
    assert cols.nth(0).locator(".lab-output").inner_text() == cols.nth(1).locator(".lab-output").inner_text()
    assert sized.evaluate(WIDER) <= 0
