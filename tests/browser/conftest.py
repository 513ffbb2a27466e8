"""Real pages in real headless Chromium (Debian's /usr/bin/chromium), against uvicorn on 127.0.0.1.

The server runs the tiny random model with a training log and a model card, and
sends a strict Content-Security-Policy (unless the app already sets one): no
inline script, style element or style attribute, so a violation shows up here
as a console error.
Each test's page fails the test on any console error or uncaught exception.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from live_server import serve

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SHOTS = Path("/tmp/shots")


class StrictCSP:
    """Adds CSP to every response that lacks one."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_csp(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_csp if scope["type"] == "http" else send)


@pytest.fixture(scope="module")
def server_url(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("browser") / "deepdive-browser"
    shutil.copytree(tiny_checkpoint, path)
    log = [{"step": s, "tokens": s * 4096, "train_loss": round(2.5 + 8 / (1 + s / 60), 3),
            "val_loss": round(2.6 + 8 / (1 + s / 60), 3), "val_losses": {"tinystories": round(2.6 + 8 / (1 + s / 60), 3)},
            "lr": 1e-3, **({"samples": {"Once upon a time": f"Once upon a time (sample at step {s})"}} if s % 300 == 0 else {})}
           for s in range(100, 1001, 100)]
    (path / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    # a card with the figures the Overview lists, its long loss label among them
    (path / "model_card.json").write_text(json.dumps({"description": "A tiny random model for the browser tests.",
                                                      "training": {"tokens_seen": 4_096_000},
                                                      "evaluation": {"tinystories_valid_loss": 2.69}}))
    settings = Settings(model=str(path))
    app = create_app(settings, Engine.load(settings))
    app.add_middleware(StrictCSP)
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")  # one Playwright at a time: other modules may start their own
def browser():
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


# a classroom: the teacher's projector and the students' phones
SIZES = {"projector": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
def page(browser, server_url: str):
    """A fresh page (1280×800) whose console errors and uncaught exceptions fail the test."""
    yield from open_page(browser, server_url, {"width": 1280, "height": 800})


@pytest.fixture
def sizes() -> dict:
    return SIZES


@pytest.fixture(params=list(SIZES), ids=list(SIZES))
def sized(request, browser, server_url: str):
    """The same, once at the projector's size and once at a phone's."""
    yield from open_page(browser, server_url, SIZES[request.param])


# htmx logs a request it aborted as an error: a newer request replacing an older one (hx-sync "replace") is meant to
ABORTED = ("htmx:sendAbort,", "htmx:afterRequest,")


def open_page(browser, server_url: str, viewport: dict):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=viewport, base_url=server_url)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
          if m.type == "error" and not m.text.startswith(ABORTED) else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.set_default_timeout(30_000)  # generous: the suite may share a busy machine
    yield pg
    seen = list(problems)  # what the test saw: closing aborts requests still in flight, which htmx logs as errors
    context.close()
    assert not seen, seen
