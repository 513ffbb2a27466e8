"""A class session in real Chromium: the teacher's projector and three phones go through two rounds.

The teacher starts a session on the Inference page; three phones (390×844) join with the code, follow the
text live, guess (round 1 typed, round 2 multiple choice), and after each reveal see the class's histogram
beside the model's distribution and the model's probability and rank of their own guess; the text gains the
revealed token on every screen. Any console error or uncaught exception fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

pytestmark = pytest.mark.browser


@pytest.fixture
def classroom(browser: Browser, server_url: str, sizes: dict) -> Iterator[tuple[Page, list[Page]]]:
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def open_page(size: str) -> Page:
        context = browser.new_context(viewport=sizes[size], base_url=server_url)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: problems.append(f"{size} console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"{size} page error: {e}"))
        page.set_default_timeout(30_000)
        return page

    teacher = open_page("projector")
    phones = [open_page("phone") for _ in range(3)]
    yield teacher, phones
    for context in contexts:
        context.close()
    assert not problems, problems


def chips(page: Page, where: str) -> int:
    return page.locator(f"{where} .chip").count()


def test_a_class_session_with_three_phones_over_two_rounds(classroom: tuple[Page, list[Page]]) -> None:
    teacher, phones = classroom
    teacher.goto("/inference?prompt=Once%20upon%20a%20time")
    teacher.get_by_role("button", name="Start a class session").click()
    code_box = teacher.locator("[data-join-code]")
    expect(code_box).to_be_visible()
    code = code_box.get_attribute("data-join-code")
    assert re.fullmatch(r"[A-Z0-9]{5}", code)
    expect(teacher.locator("#class-panel svg.class-qr")).to_be_visible()

    for i, phone in enumerate(phones):
        phone.goto(f"/join?code={code}")  # the QR code's link
        expect(phone.locator("#join-code")).to_have_value(code)
        phone.locator("#join-nickname").fill(f"Student {i + 1}")
        phone.get_by_role("button", name="Join").click()
        expect(phone.locator("#phone-text")).to_contain_text(re.compile(r"Once\W+upon\W+a\W+time"))
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    expect(teacher.locator("#class-students")).to_have_text("3")

    # the teacher's step reaches every phone
    teacher.get_by_role("button", name="Take the most likely").click()
    for phone in phones:
        expect(phone.locator("#phone-text .chip")).to_have_count(1)

    # round 1: typed guesses
    teacher.locator("[data-class-action=typed]").click()
    expect(teacher.locator("#inf-figure")).to_be_hidden()  # the projector does not give the answer away
    for phone, guess in zip(phones, ("the", "a", "<b>dragon</b>")):
        phone.locator("#guess-text").fill(guess)
        phone.get_by_role("button", name="Send my guess").click()
        expect(phone.locator("#phone-said")).to_contain_text("Your guess counts as")
    expect(teacher.locator("#class-answers")).to_have_text("3")
    teacher.locator("[data-class-action=reveal]").click()
    expect(teacher.locator("#class-reveal .class-bars .lab-bar.class-actual")).to_have_count(1)
    expect(teacher.locator("#inf-sofar .chip")).to_have_count(2)  # the revealed token joined the teacher's text
    expect(teacher).to_have_url(re.compile(r"steps=g\d+t\d+\.s\d+t\d+r\d+"))
    expect(teacher.locator("#inf-figure")).to_be_visible()
    for phone in phones:
        expect(phone.locator("#phone-text .chip")).to_have_count(2)
        expect(phone.locator(".class-yours")).to_have_attribute("data-guess-rank", re.compile(r"^\d+$"))
        expect(phone.locator(".class-yours")).to_contain_text("the model gave it")
        expect(phone.locator(".class-bars .lab-bar.class-actual")).to_have_count(1)
    assert "<b>" not in phones[2].locator(".class-bars").inner_html()  # the typed HTML is text
    counted = sum(int(n) for n in teacher.locator("#class-reveal .class-bars [data-count]").evaluate_all(
        "bars => bars.map(b => b.dataset.count)"))
    assert counted == 3

    # round 2: multiple choice
    teacher.locator("[data-class-action=choices]").click()
    for phone in phones:
        expect(phone.locator(".class-option")).to_have_count(6)
        phone.locator(".class-option").first.click()
        expect(phone.locator("#phone-said")).to_contain_text("Your guess counts as")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    expect(teacher.locator("#class-answers")).to_have_text("3")
    teacher.locator("[data-class-action=reveal]").click()
    expect(teacher.locator("#class-reveal h3")).to_contain_text("Round 2")
    expect(teacher.locator("#inf-sofar .chip")).to_have_count(3)
    for phone in phones:
        expect(phone.locator(".class-result h2")).to_contain_text("Round 2")
        expect(phone.locator("#phone-text .chip")).to_have_count(3)
        expect(phone.locator(".class-yours")).to_have_attribute("data-guess-prob", re.compile(r"^[0-9.e-]+$"))
        expect(phone.locator(".class-losses")).to_contain_text("Over 2 rounds")

    # a reload keeps the teacher in the session
    teacher.reload()
    expect(teacher.locator("[data-join-code]")).to_have_attribute("data-join-code", code)
