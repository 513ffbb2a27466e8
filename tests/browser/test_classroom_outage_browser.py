"""A Redis blip in real Chromium: the projector and a phone follow the class again after Redis was away.

The class lives in a real redis-server that keeps its data (appendonly, as the README asks operators to
set). The teacher (1366×768) starts a session and a phone (390×844) joins; Redis stops for 1 s, then
for 8 s, and starts again with its data. The phone says it is reconnecting while Redis is away, then
shows the round the teacher opens, and the projector counts the phone's answer: both streams came back
by themselves, and the phone kept its place (a reload does not send it back to /join). Any console
error or uncaught exception fails the test.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from app.classroom import event_routes
from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from live_server import serve
from redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.browser

if REDIS_SERVER is None and not os.environ.get("CI"):
    pytest.skip("redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-outage"), persist=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def class_url(tiny_checkpoint: Path, redis: RedisServer) -> Iterator[str]:
    # host 0.0.0.0: the server believes phones can reach it, as `python -m app --host 0.0.0.0` does
    settings = Settings(model=str(tiny_checkpoint), redis_url=redis.url, host="0.0.0.0")
    with serve(create_app(settings, Engine.load(settings))) as url:
        yield url


@pytest.mark.parametrize("outage_s", [1, 8])
def test_the_class_follows_again_after_redis_was_away(browser: Browser, class_url: str, redis: RedisServer,
                                                      sizes: dict, outage_s: int, monkeypatch) -> None:
    monkeypatch.setattr(event_routes, "GRACE_S", 3.0)  # a phone that did not come back would lose its place
    problems: list[str] = []

    def open_page(size: str) -> Page:
        page = browser.new_context(viewport=sizes[size], base_url=class_url).new_page()
        page.on("console", lambda m: problems.append(f"{size} console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"{size} page error: {e}"))
        page.set_default_timeout(30_000)
        return page

    teacher, phone = open_page("projector"), open_page("phone")
    teacher.goto("/inference?prompt=Once%20upon%20a%20time")
    teacher.get_by_role("button", name="Start a class session").click()
    code = teacher.locator("[data-join-code]").get_attribute("data-join-code")
    phone.goto(f"/join?code={code}")
    phone.get_by_role("button", name="Join").click()
    expect(phone.locator("#phone-text")).to_contain_text(re.compile(r"Once\W+upon"))
    expect(teacher.locator("#class-students")).to_have_text("1")

    redis.stop()
    away_since = time.monotonic()
    if outage_s >= 5:  # long enough to be seen: each screen says what is going on
        expect(phone.locator("#class-connection")).to_contain_text("Reconnecting", timeout=outage_s * 1000)
        expect(teacher.locator("#class-connection")).to_contain_text("Reconnecting", timeout=outage_s * 1000)
    time.sleep(max(0.0, outage_s - (time.monotonic() - away_since)))
    redis.start()  # with its data: the session, the student and the stepper are all there

    teacher.locator("[data-class-action=typed]").click()
    expect(phone.locator("#guess-text")).to_be_visible(timeout=20_000)  # the phone's stream came back
    expect(phone.locator("#class-connection")).to_be_hidden()
    phone.locator("#guess-text").fill("there")
    phone.get_by_role("button", name="Send my guess").click()
    expect(phone.locator("#phone-said")).to_contain_text("Your guess counts as")
    expect(teacher.locator("#class-answers")).to_have_text("1", timeout=20_000)  # and the projector's
    expect(teacher.locator("#class-connection")).to_be_hidden()

    time.sleep(max(0.0, away_since + outage_s + 4 - time.monotonic()))  # every grace has run out
    phone.reload()  # the phone kept its place: no way back to /join
    expect(phone).to_have_url(re.compile(f"/class/{code}$"))
    expect(phone.locator("#guess-text")).to_be_visible()
    teacher.locator("[data-class-action=reveal]").click()
    expect(phone.locator(".class-result h2")).to_contain_text("Round 1")
    for page in (teacher, phone):
        page.context.close()
    assert not problems, problems
