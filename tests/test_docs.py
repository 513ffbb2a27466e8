"""/docs is Swagger UI served from this app (static/vendor/swagger-ui), never from a CDN: it works offline
and under the app's Content-Security-Policy. /redoc is gone; /openapi.json is unchanged."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

STATIC = Path(__file__).resolve().parent.parent / "static"
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@pytest.fixture(scope="module")
def client(tiny_checkpoint) -> Iterator[TestClient]:
    settings = Settings(model=str(tiny_checkpoint), max_new_tokens=40)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def html(client: TestClient) -> str:
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def assets(html: str) -> list[str]:
    return re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"]*)"', html)


def test_docs_uses_only_same_origin_assets(html: str) -> None:
    refs = assets(html)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in refs
    assert "/static/vendor/swagger-ui/swagger-ui.css" in refs
    assert "/static/js/swagger-init.js" in refs
    for ref in re.findall(r'\b(?:src|href)="([^"]*)"', html):  # links too, not only assets
        assert "http://" not in ref and "https://" not in ref and not ref.startswith("//"), ref
        assert ref.startswith("/"), ref
    assert "//cdn" not in html and "cdn.jsdelivr" not in html and "unpkg" not in html


def test_docs_has_no_inline_script_or_style(html: str) -> None:
    for attrs, body in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.DOTALL):
        assert "src=" in attrs and not body.strip(), "inline script: the CSP blocks it"
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"


def test_every_asset_is_served_with_its_type(client: TestClient, html: str) -> None:
    for ref in assets(html):
        r = client.get(ref)
        assert r.status_code == 200, ref
        kind = TYPES[Path(ref).suffix]
        assert r.headers["content-type"].split(";")[0] == kind, (ref, r.headers["content-type"])
        assert r.content


def test_init_script_points_at_this_apps_schema() -> None:
    js = (STATIC / "js" / "swagger-init.js").read_text()
    assert 'url: "/openapi.json"' in js and 'dom_id: "#swagger-ui"' in js
    assert "validatorUrl: null" in js  # else Swagger UI asks validator.swagger.io for a badge
    assert "http://" not in js and "https://" not in js


def test_vendored_swagger_ui_is_documented_and_modest() -> None:
    folder = STATIC / "vendor" / "swagger-ui"
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "README.md"} <= {p.name for p in folder.iterdir()}
    readme = (folder / "README.md").read_text()
    assert re.search(r"swagger-ui-dist`? \**\d+\.\d+\.\d+", readme)
    assert not list(folder.glob("*.map")) and not list(folder.glob("*es-bundle*"))
    assert sum(p.stat().st_size for p in folder.iterdir()) < 3_000_000


def test_docs_sends_the_security_headers(client: TestClient) -> None:
    r = client.get("/docs")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"


def test_redoc_and_oauth_redirect_are_gone(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 404


def test_openapi_json_still_describes_the_api(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["info"]["title"] == "Deep Dive"
    assert "/api/tokenize" in spec["paths"]
    assert "/docs" not in spec["paths"]  # the page itself is not part of the API
