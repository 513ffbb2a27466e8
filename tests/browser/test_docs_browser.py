"""/docs in headless Chromium: Swagger UI renders this app's API from files this server sends, asks
nothing of any other host (the page must work offline), and breaks no Content-Security-Policy rule
(the `page` fixture fails the test on any console error, CSP violations included)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)
SHOTS = Path("/tmp/shots")


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_docs_render_offline_from_this_server(sized: Page, server_url: str):
    page = sized
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto("/docs")
    tokenize = page.locator(".opblock-summary-path", has_text="/api/tokenize")
    expect(tokenize.first).to_be_visible()
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Deep Dive")
    page.screenshot(path=str(SHOTS / "docs.png"))

    # "Try it out" on one operation: the page's own fetch reaches the API (connect-src 'self')
    tokenize.first.click()
    block = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/api/tokenize")).first
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    expect(block.locator(".live-responses-table tr.response .response-col_status")).to_have_text("200")
    page.wait_for_load_state("networkidle")

    paths = {urlsplit(u).path for u in requests}
    assert {"/docs", "/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/vendor/swagger-ui/swagger-ui.css",
            "/static/js/swagger-init.js", "/openapi.json", "/api/tokenize"} <= paths, sorted(paths)
    # data: URLs (the stylesheet's inline icons) are not network requests; everything else is this server
    elsewhere = [u for u in requests if not u.startswith("data:") and origin(u) != origin(server_url)]
    assert not elsewhere, elsewhere
