"""The internals, inference and playground pages as HTML: each renders, explains itself, links on,
restores its settings from the URL, escapes what it echoes, and carries no inline script."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

PAGES = ("/internals", "/inference", "/playground")
EVIL = '</textarea><script>alert("x")</script>'
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@pytest.fixture(scope="module")
def client(tiny_checkpoint) -> Iterator[TestClient]:
    settings = Settings(model=str(tiny_checkpoint), max_new_tokens=40)
    with TestClient(create_app(settings)) as c:
        yield c


def textarea(html: str, name: str) -> str:
    m = re.search(rf'<textarea[^>]*name="{name}"[^>]*>(.*?)</textarea>', html, re.S)
    assert m, f"no textarea {name}"
    return unescape(m.group(1))


def tag(html: str, name: str, attr: str = "name") -> str:
    m = re.search(rf'<(?:input|select)[^>]*\b{attr}="{name}"[^>]*>', html)
    assert m, f"no field {name}"
    return m.group(0)


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_with_intro_and_nav(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    html = r.text
    intro = re.search(r'<div class="lede">(.*?)</div>', html, re.S).group(1)
    assert len(re.sub(r"<[^>]+>", "", intro).split()) > 30  # sentences to read aloud, not a label
    assert 'aria-current="page"' in html
    assert '<link rel="stylesheet" href="/static/css/lab.css">' in html


def test_next_stage_links(client: TestClient) -> None:
    assert 'href="/inference" rel="next"' in client.get("/internals").text
    assert 'href="/playground" rel="next"' in client.get("/inference").text
    assert 'href="/">Back to the overview' in client.get("/playground").text  # the last stage leads back


@pytest.mark.parametrize("path", PAGES)
def test_prompt_from_url_is_restored_and_escaped(client: TestClient, path: str) -> None:
    html = client.get(path, params={"prompt": EVIL}).text
    assert textarea(html, "prompt") == EVIL
    assert "<script>alert" not in html


def test_inference_settings_from_url(client: TestClient) -> None:
    html = client.get("/inference", params={"temperature": "0.5", "top_k": "7", "top_p": "0.9", "seed": "123",
                                            "n": "20"}).text
    assert 'value="0.5"' in tag(html, "temperature")
    assert 'value="7"' in tag(html, "top_k")
    assert 'value="0.9"' in tag(html, "top_p")
    assert 'value="123"' in tag(html, "seed")
    assert '<option value="20" selected>' in html


def test_mangled_or_extreme_settings_fall_back(client: TestClient) -> None:
    html = client.get("/inference", params={"temperature": "hot", "top_k": "1e9", "top_p": "nan", "n": "7"}).text
    assert 'value="1.0"' in tag(html, "temperature")
    assert 'value="50"' in tag(html, "top_k")  # clamped to the slider's end
    assert 'value="1.0"' in tag(html, "top_p")
    assert '<option value="10" selected>' in html  # not a choice on offer: the default


def test_internals_draws_the_real_architecture(client: TestClient) -> None:
    info = client.get("/api/model").json()
    html = client.get("/internals").text
    C, L = info["n_embd"], info["n_layer"]
    assert f"{info['parameters']['attention'] // L:,}" in html  # one block's attention
    assert f"{info['parameters']['mlp'] // L:,}" in html
    assert f"{info['parameters']['total']:,}" in html
    assert f"{C} → {4 * C} → {C}" in html
    assert html.count('class="arch-block"') == L  # the tiny model: every block drawn


def test_internals_layer_and_head_from_url(client: TestClient) -> None:
    html = client.get("/internals", params={"layer": "0", "head": "3", "pos": "2"}).text
    assert '<option value="0" selected>' in html
    assert re.search(r'name="head" value="3"[^>]*checked', html)
    assert 'data-initial="2"' in html
    html = client.get("/internals", params={"layer": "99", "head": "-4"}).text
    assert '<option value="1" selected>' in html  # clamped to the last block
    assert re.search(r'name="head" value="0"[^>]*checked', html)


def test_playground_settings_and_presets(client: TestClient) -> None:
    html = client.get("/playground", params={"temperature": "1.5", "max_new_tokens": "999", "seed": "77",
                                             "stop": "line"}).text
    assert 'value="1.5"' in tag(html, "temperature")
    assert 'value="40"' in tag(html, "max_new_tokens")  # the server's cap
    assert 'value="77"' in tag(html, "seed")
    assert '<option value="line" selected>' in html
    assert "loutre de mer" in html and "Human:" in html and "Tom and his dog" in html
    assert "data-compare='[0.0, 0.7, 1.0, 1.5]'" in html
    html = client.get("/playground", params={"seed": "<b>", "stop": "<b>"}).text
    assert 'value=""' in tag(html, "seed")
    assert '<option value="none" selected>' in html


@pytest.mark.parametrize("path", PAGES)
def test_no_inline_script_or_handler(client: TestClient, path: str) -> None:
    html = client.get(path).text
    for script in re.findall(r"<script\b[^>]*>", html):
        assert " src=" in script or 'type="application/json"' in script, script
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert "javascript:" not in html


def test_lab_templates_have_no_inline_script() -> None:
    for name in ("internals.html", "inference.html", "playground.html"):
        text = (TEMPLATES / name).read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), name
        assert not re.search(r"\son[a-z]+\s*=", text), name
