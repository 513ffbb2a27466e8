"""A class session in real Chromium: the teacher's projector and three phones go through two rounds.

The teacher starts a session on the Inference page; three phones (390×844) join with the code, follow the
text live, guess (round 1 typed, round 2 multiple choice), and after each reveal see the class's histogram
beside the model's distribution and the model's probability and rank of their own guess; the text gains the
revealed token on every screen. Any console error or uncaught exception fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from live_server import serve

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server_url(tiny_checkpoint: Path) -> Iterator[str]:
    """The server as `python -m app --host 0.0.0.0` starts it for a class: it believes phones can reach it."""
    settings = Settings(model=str(tiny_checkpoint), host="0.0.0.0")
    with serve(create_app(settings, Engine.load(settings))) as url:
        yield url


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
    assert re.fullmatch(r"[A-Z0-9]{6}", code)
    expect(teacher.locator("#class-panel svg.class-qr")).to_be_attached()
    # the class on one screen (1366×768, as loaded after starting): the code, the stepper's text, the round's controls
    assert teacher.evaluate("window.scrollY") == 0
    for where in ("[data-join-code]", "#inf-sofar", "[data-class-action=typed]", "[data-class-action=choices]"):
        box = teacher.locator(where).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 768, (where, box)
    bar_top = teacher.locator(".class-bar").bounding_box()["y"]
    assert teacher.locator("#inf-sofar").bounding_box()["y"] + 20 < bar_top  # the text is not under the bar

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
    expect(teacher.locator("#class-reveal .class-bars")).to_be_in_viewport()  # it came into view as it arrived
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
        expect(phone.locator(".class-option").first).to_have_attribute("aria-pressed", "true")  # the chosen one shows
        expect(phone.locator(".class-option[aria-pressed=true]")).to_have_count(1)
        assert phone.locator(".class-option").first.evaluate("b => getComputedStyle(b).outlineStyle") == "solid"
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

    # the session ends: each phone and the panel say so, with no console error (the fixture checks)
    teacher.once("dialog", lambda d: d.accept())
    teacher.get_by_role("button", name="End session").click()
    expect(teacher.get_by_role("button", name="Start a class session")).to_be_visible()
    for phone in phones:
        expect(phone.locator("[data-class-ended]")).to_contain_text(f"Class session {code} has ended")


def test_a_server_on_loopback_only_says_so_and_draws_no_qr_code(page: Page, tiny_checkpoint: Path) -> None:
    settings = Settings(model=str(tiny_checkpoint))  # python -m app's default: 127.0.0.1 only
    with serve(create_app(settings, Engine.load(settings))) as url:
        page.goto(url + "/inference?prompt=Once")
        expect(page.locator("[data-class-loopback]")).to_contain_text("python -m app --host 0.0.0.0 --port 8000")
        page.get_by_role("button", name="Start a class session").click()
        expect(page.locator("[data-join-code]")).to_be_visible()
        expect(page.locator("[data-class-loopback]")).to_contain_text("Phones cannot reach this server")
        expect(page.locator("svg.class-qr")).to_have_count(0)


def test_the_phones_watch_the_model_their_teacher_trains(classroom: tuple[Page, list[Page]]) -> None:
    """A run started from the teacher's browser is the class's: its phones show the curve and the samples, with
    no Stop of their own, and see it stop when the teacher stops it."""
    teacher, phones = classroom
    phone = phones[0]
    teacher.goto("/inference?prompt=Once%20upon%20a%20time")
    teacher.get_by_role("button", name="Start a class session").click()
    code = teacher.locator("[data-join-code]").get_attribute("data-join-code")
    phone.goto(f"/join?code={code}")
    phone.get_by_role("button", name="Join").click()
    expect(phone.locator("#phone-text")).to_contain_text("Once")
    expect(phone.locator(".class-live")).to_be_hidden()  # nothing trains yet

    teacher.goto("/loss")
    teacher.locator("#live-minutes").select_option("1")
    teacher.get_by_role("button", name="Train").click()
    expect(teacher.locator("#live-state")).to_contain_text(f"started by the teacher of class {code}")
    expect(phone.locator(".class-live #live-chart")).to_be_visible(timeout=60_000)
    expect(phone.locator(".class-live .live-sample figcaption").first).to_have_text("after 0 steps")
    expect(phone.locator(".class-live").get_by_role("button", name="Stop")).to_have_count(0)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # the curve fits a phone
    phone.locator(".class-live").screenshot(path="/tmp/shots/live-phone.png")

    teacher.get_by_role("button", name="Stop").click()
    expect(phone.locator(".class-live #live-state")).to_contain_text("Stopped", timeout=30_000)
