"""A locked-down server: security headers on every answer, no CORS unless configured, localhost by default,
checkpoints loaded without pickle, and pages that escape what they show."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from app.security import CSP
from helpers import expect_http_error

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@pytest.fixture(scope="module")
def settings(tiny_checkpoint) -> Settings:
    return Settings(model=str(tiny_checkpoint), threads=1, max_text_chars=5000, max_body_bytes=50_000,
                    max_new_tokens=20)


ANSWERS = [
    ("GET", "/", None),                                   # a page
    ("GET", "/tokenizer", None),
    ("GET", "/healthz", None),                            # the API
    ("POST", "/api/tokenize", {"text": "hi"}),
    ("GET", "/static/css/deepdive.css", None),            # a static file
    ("GET", "/no-such-page", None),                       # errors: 404, 422, 405
    ("POST", "/api/tokenize", {"nope": 1}),
    ("PUT", "/api/tokenize", None),
    ("POST", "/partials/tokens", None),                   # a page partial without its form
]


def test_an_unexpected_failure_is_a_sentence_with_the_security_headers(settings, engine, monkeypatch) -> None:
    async def broken(text: str):
        raise RuntimeError("a fault no check foresaw")

    monkeypatch.setattr(engine, "tokenize", broken)
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as c:
        r = c.post("/api/tokenize", json={"text": "hi"})
    expect_http_error(r, 500, "^" + re.escape("Something went wrong on the server (RuntimeError); its log has the "
                                             "details. Try again, or report it.") + "$")
    assert r.headers["content-security-policy"] == CSP and r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(("method", "path", "body"), ANSWERS, ids=[f"{m} {p}" for m, p, _ in ANSWERS])
def test_security_headers_on_every_answer(client: TestClient, method: str, path: str, body) -> None:
    r = client.request(method, path, json=body)
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_csp_allows_no_inline_script_and_no_other_origin() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in CSP and "http" not in CSP and "*" not in CSP


def test_headers_on_a_stream(client: TestClient) -> None:
    r = client.post("/api/generate", json={"prompt": "Hi", "max_new_tokens": 2})
    assert r.status_code == 200 and r.headers["x-frame-options"] == "DENY"


def test_pages_need_nothing_the_csp_forbids() -> None:
    """No style attributes or <style> (style-src 'self' blocks them) and no inline scripts or handlers."""
    for page in (ROOT / "templates").rglob("*.html"):
        html = page.read_text()
        assert " style=" not in html and "<style" not in html, page
        for tag in html.split("<script")[1:]:
            opening = tag.split(">", 1)[0]
            assert "src=" in opening or 'type="application/json"' in opening, (page, opening)


def test_no_cors_by_default(client: TestClient) -> None:
    r = client.post("/api/tokenize", json={"text": "hi"}, headers={"origin": "https://evil.example"})
    assert not [h for h in r.headers if h.startswith("access-control-")]
    r = client.options("/api/tokenize", headers={"origin": "https://evil.example",
                                                  "access-control-request-method": "POST"})
    assert not [h for h in r.headers if h.startswith("access-control-")]


def test_cors_only_for_configured_origins(settings: Settings, engine: Engine) -> None:
    configured = settings.model_copy(update={"cors_origins": ["http://teacher.local:8000"]})
    with TestClient(create_app(configured, engine)) as c:
        ok = c.post("/api/tokenize", json={"text": "hi"}, headers={"origin": "http://teacher.local:8000"})
        assert ok.headers["access-control-allow-origin"] == "http://teacher.local:8000"
        other = c.post("/api/tokenize", json={"text": "hi"}, headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        assert other.headers["x-frame-options"] == "DENY"


def test_binds_to_localhost_by_default(monkeypatch) -> None:
    monkeypatch.delenv("DEEPDIVE_HOST", raising=False)
    assert Settings().host == "127.0.0.1"
    out = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "127.0.0.1" in out.stdout and "0.0.0.0" in out.stdout


def test_checkpoints_load_without_pickle() -> None:
    """Loading code uses safetensors, or torch.load with weights_only=True; nothing evaluates input."""
    for path in [*(ROOT / "app").rglob("*.py"), *(ROOT / "model").glob("*.py")]:
        code = path.read_text()
        for call in code.split("torch.load(")[1:]:
            assert "weights_only=True" in call.split(")")[0], path
        assert "pickle.load" not in code and "eval(" not in code.replace(".eval(", ""), path
        assert "os.system" not in code and "shell=True" not in code, path
        if path == ROOT / "app" / "serving" / "live.py":  # the one program started: our training job, fixed arguments
            assert code.count("subprocess.Popen(") == 1
            assert 'subprocess.Popen([sys.executable, "-m", "model.training.live", str(spec)]' in code
        else:
            assert "subprocess" not in code, path


@pytest.mark.parametrize(("path", "field"), [("/partials/tokens", "text"), ("/partials/bpe", "text"),
                                             ("/partials/compare", "text")])
def test_partials_escape_html_in_prompts(client: TestClient, path: str, field: str) -> None:
    r = client.post(path, data={field: PAYLOAD})
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "<img src=x" not in r.text


def test_pages_escape_query_parameters(client: TestClient) -> None:
    r = client.get("/tokenizer", params={"text": PAYLOAD, "q": PAYLOAD})
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
    r = client.get("/partials/vocab", params={"q": PAYLOAD})
    assert r.status_code == 200 and "<script>alert" not in r.text and "<img src=x" not in r.text


def test_token_texts_are_escaped(client: TestClient) -> None:
    """Token texts such as '<' and '>' come from the vocabulary, not the user, and are escaped too."""
    r = client.get("/partials/vocab", params={"q": "<"})
    assert r.status_code == 200 and "&lt;" in r.text
