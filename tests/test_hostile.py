"""Whatever a room of students types: each gets a right answer or a 4xx saying what is allowed,
and the server keeps serving. Also faults: time budgets, a per-client share, disconnects, bad models.

test_api.py already covers some of the catalogue (NaN and infinities, wrong content types, body size,
context length, lone surrogates in tokenize, a full queue, disconnects); this file covers the rest.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from helpers import expect_http_error
from live_server import serve
from model.decode.batching import BatchDecoder
from model.tokenizers.tokenizer import EOT_ID

ROOT = Path(__file__).resolve().parent.parent
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def settings(tiny_checkpoint) -> Settings:
    return Settings(model=str(tiny_checkpoint), threads=1, max_text_chars=5000, max_body_bytes=50_000,
                    max_new_tokens=20, max_activation_values=5_000)


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every hostile request, the server still answers an ordinary one."""
    yield
    if "client" in request.fixturenames:
        c = request.getfixturevalue("client")
        assert c.post("/api/tokenize", json={"text": "still here"}).status_code == 200
        assert c.post("/api/next-token", json={"text": "still here", "n": 1}).status_code == 200


def post_raw(client: TestClient, path: str, raw: bytes | str) -> httpx.Response:
    return client.post(path, content=raw, headers=JSON)


def round_trip(client: TestClient, text: str) -> str:
    r = client.post("/api/tokenize", json={"text": text})
    assert r.status_code == 200, r.text
    ids = [t["id"] for t in r.json()["tokens"]]
    r = client.post("/api/detokenize", json={"ids": ids})
    assert r.status_code == 200
    return r.json()["text"]


# ---- texts ----

@pytest.mark.parametrize("text", ["", " ", "   \n\t  ", "\u00a0\u2003"])
def test_empty_and_whitespace_texts(client: TestClient, text: str) -> None:
    r = client.post("/api/tokenize", json={"text": text})
    assert r.status_code == 200 and r.json()["counts"]["characters"] == len(text)
    r = client.post("/api/next-token", json={"text": text})
    if text:
        assert r.status_code == 200
    else:
        expect_http_error(r, 422, re.escape("The input is empty: give at least one token."))
    r = client.post("/api/generate", json={"prompt": text, "max_new_tokens": 2})
    assert r.status_code == 200 and '"finish_reason"' in r.text
    r = client.post("/partials/tokens", data={"text": text})
    assert r.status_code == 200


def test_a_megabyte_of_text(client: TestClient) -> None:
    mb = "x" * 1_000_000
    for path, body in [("/api/tokenize", {"text": mb}), ("/api/generate", {"prompt": mb}),
                       ("/v1/completions", {"model": "x", "prompt": mb})]:
        expect_http_error(client.post(path, json=body), 413, "accepts at most 50,000")
    r = client.post("/partials/tokens", data={"text": mb})
    expect_http_error(r, 413, "accepts at most 50,000")


def test_text_over_the_character_limit_but_under_the_body_limit(client: TestClient) -> None:
    r = client.post("/api/tokenize", json={"text": "y" * 6000})
    expect_http_error(r, 413, "6,000 characters; the limit is 5,000")


def test_invalid_utf8_and_surrogates_in_json(client: TestClient) -> None:
    r = post_raw(client, "/api/tokenize", b'{"text": "\xff"}')
    expect_http_error(r, 422, "send UTF-8 text")
    r = post_raw(client, "/api/tokenize", b'{"text": "\\ud800"}')
    assert r.status_code == 200 and r.json()["tokens"][0]["text"] == "\ufffd"
    r = post_raw(client, "/api/generate", b'{"prompt": "\\udfff\\ud800", "max_new_tokens": 1}')
    assert r.status_code == 200
    r = client.post("/partials/tokens", content=b"text=%ED%A0%80%FF", headers={
        "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200


@pytest.mark.parametrize("raw", [b"", b"{", b"null", b'"text"', b"[" * 100_00 + b"]" * 100_00,
                                 b'{"text": "a", "text": 1}', b'{"text": "a"} trailing', b"\x00\x01"])
def test_malformed_json(client: TestClient, raw: bytes) -> None:
    message = expect_http_error(post_raw(client, "/api/tokenize", raw), 422, "JSON|text")
    assert message[0].isupper() and message.endswith("."), message


@pytest.mark.parametrize("text", ["a\x00b", "\x07\x08\x1b[31mred\x1b[0m\x7f", "\r\n\u2028\u2029", "\ufeffbom",
                                  "\u202eevil\u202c", "שלום עולם مرحبا", "👩\u200d👩\u200d👧\u200d👦 👍🏽",
                                  "e\u0301\u0301\u0301 Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
                                  "<|endoftext|>", "<|im_start|>user<|im_end|>", "<|fim_prefix|><s></s>[INST]",
                                  "<script>alert(1)</script>", "\U0010ffff\U000e0001"])
def test_strange_text_round_trips(client: TestClient, text: str) -> None:
    assert round_trip(client, text) == text
    r = client.post("/api/next-token", json={"text": text, "n": 3})
    assert r.status_code == 200
    r = client.post("/partials/tokens", data={"text": text})
    assert r.status_code == 200 and "<script>" not in r.text


def test_special_token_spellings_are_text(client: TestClient) -> None:
    ids = [t["id"] for t in client.post("/api/tokenize", json={"text": "<|endoftext|>"}).json()["tokens"]]
    assert EOT_ID not in ids and len(ids) > 1


def test_api_answers_are_never_html(client: TestClient) -> None:
    r = client.post("/api/tokenize", json={"text": "<script>alert(1)</script>"})
    assert r.headers["content-type"] == "application/json" and r.headers["x-content-type-options"] == "nosniff"


# ---- numbers ----

OK_NUMBERS = [{"top_p": 1}, {"top_p": 1e-6}, {"top_k": 0}, {"top_k": 1}, {"top_k": 50257},
              {"temperature": 0}, {"temperature": 10}, {"temperature": 1e-300}]
BAD_NUMBERS = [('"temperature": 100', "less than or equal to 10"), ('"temperature": -1', "greater than or equal to 0"),
               ('"top_p": 0', "greater than or equal to"), ('"top_p": 1.5', "less than or equal to 1"),
               ('"top_k": -5', "greater than or equal to 0"), ('"top_k": 1000000000000000000000000000000', "top_k"),
               ('"n": 0', "greater than or equal to 1"), ('"n": 1000000000', "less than or equal to"),
               ('"temperature": 1e309', "temperature"), ('"top_k": 1.5', "integer"),
               ('"temperature": -0.0, "top_p": 1e-400', "top_p")]


@pytest.mark.parametrize("extra", OK_NUMBERS, ids=str)
def test_edge_numbers_that_are_allowed(client: TestClient, extra: dict) -> None:
    r = client.post("/api/next-token", json={"text": "The cat", "n": 5, **extra})
    assert r.status_code == 200, r.text
    after = [c["prob"] for c in r.json()["after"]]
    assert all(0 <= p <= 1 for p in after)
    r = client.post("/api/generate", json={"prompt": "The cat", "max_new_tokens": 2, "seed": 1, **extra})
    assert r.status_code == 200 and '"finish_reason"' in r.text


@pytest.mark.parametrize(("fields", "message"), BAD_NUMBERS, ids=[f for f, _ in BAD_NUMBERS])
def test_edge_numbers_that_are_refused(client: TestClient, fields: str, message: str) -> None:
    expect_http_error(post_raw(client, "/api/next-token", '{"text": "x", %s}' % fields), 422, re.escape(message))


@pytest.mark.parametrize(("n", "status", "message"), [(0, 422, "greater than or equal to 1"),
                                                      (10**9, 422, "this server generates at most 20"),
                                                      (10**30, 422, "max_new_tokens"), (-1, 422, "greater than")])
def test_max_new_tokens_extremes(client: TestClient, n: int, status: int, message: str) -> None:
    r = post_raw(client, "/api/generate", '{"prompt": "x", "max_new_tokens": %d}' % n)
    expect_http_error(r, status, re.escape(message))
    r = post_raw(client, "/v1/completions", '{"model": "x", "prompt": "x", "max_tokens": %d}' % n)
    expect_http_error(r, status, ".")
    assert "message" not in r.json()  # the OpenAI API's shape: the sentence is the error's


def test_unknown_fields_name_the_allowed_ones(client: TestClient) -> None:
    r = client.post("/api/next-token", json={"text": "x", "model": "/etc/passwd"})
    message = expect_http_error(r, 422, "Remove model: it is not a field of this request")
    assert "temperature" in message


# ---- query strings ----

def test_long_query_strings(client: TestClient) -> None:
    r = client.get("/api/vocab", params={"q": "a" * 10_000})
    expect_http_error(r, 422, "at most 100 characters")
    r = client.get("/api/vocab", params={"offset": "9" * 5000})
    expect_http_error(r, 422, "offset")
    r = client.get("/api/vocab?" + "&".join(f"x{i}=1" for i in range(5000)))
    assert r.status_code == 200
    r = client.get("/partials/vocab", params={"q": "<b>" * 5000})
    assert r.status_code in (200, 422) and "<b><b>" not in r.text


def test_a_huge_request_line_is_refused_and_the_server_goes_on(settings: Settings, engine: Engine) -> None:
    with serve(create_app(settings, engine)) as url, httpx.Client(base_url=url, timeout=30) as c:
        host, port = url.removeprefix("http://").split(":")
        # httpx refuses to send a URL this long, so write the request by hand
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /api/vocab?q=" + b"z" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status_line = sock.makefile("rb").readline()
        assert status_line.split()[1].startswith(b"4"), status_line
        assert c.get("/api/vocab", params={"q": "the"}).status_code == 200


# ---- faults: time budgets ----

@pytest.fixture
def slow_steps(monkeypatch) -> None:
    real_step = BatchDecoder.step

    def slow_step(self: BatchDecoder):
        time.sleep(0.1)
        return real_step(self)

    monkeypatch.setattr(BatchDecoder, "step", slow_step)


def test_analysis_past_its_time_budget_is_a_clear_503(settings: Settings) -> None:
    short = settings.model_copy(update={"request_timeout_s": 0.3})
    engine = Engine.load(short)
    with TestClient(create_app(short, engine)) as c:
        release = threading.Event()
        engine.model_thread.submit(lambda: release.wait(20))
        try:
            r = c.post("/api/next-token", json={"text": "x"})
            expect_http_error(r, 503, re.escape("did not answer within 0.3 s, this server's limit per request"))
            assert r.headers["retry-after"]
        finally:
            release.set()
        assert c.post("/api/next-token", json={"text": "x"}).status_code == 200
        assert engine.model_thread.queued == 0


def test_generation_past_its_time_budget_ends_with_a_message(settings: Settings, slow_steps) -> None:
    short = settings.model_copy(update={"generation_timeout_s": 0.5})
    engine = Engine.load(short)
    with TestClient(create_app(short, engine)) as c:
        r = c.post("/api/generate", json={"prompt": "x", "max_new_tokens": 20})
        done = json.loads(r.text.strip().split("\n\n")[-1].split("data: ", 1)[1])
        assert done["finish_reason"] == "timeout" and "stopped after 0.5 s" in done["message"]
        assert done["completion_tokens"] < 20
        deadline = time.monotonic() + 5
        while engine.model_thread.streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.model_thread.streams == 0


# ---- faults: fairness ----

def test_a_client_over_its_share_waits_its_turn(settings: Settings) -> None:
    engine = Engine.load(settings)
    app = create_app(settings.model_copy(update={"per_client_requests": 2}), engine)
    with TestClient(app) as c, ThreadPoolExecutor(3) as pool:
        release = threading.Event()
        engine.model_thread.submit(lambda: release.wait(20))
        try:
            running = [pool.submit(c.post, "/api/next-token", json={"text": "x"}) for _ in range(2)]
            deadline = time.monotonic() + 10
            while engine.model_thread.queued < 2 and time.monotonic() < deadline:  # both wait for the model
                time.sleep(0.01)
            third = pool.submit(c.post, "/partials/loss", data={"text": "x"})  # over the share: it waits
            time.sleep(0.3)
            assert not third.done() and engine.model_thread.queued == 2  # not refused, not yet on the model
            assert c.post("/api/tokenize", json={"text": "x"}).status_code == 200  # no model: no share
        finally:
            release.set()
        assert [f.result(timeout=20).status_code for f in running] == [200, 200]
        assert third.result(timeout=20).status_code == 200 and "Mean loss" in third.result().text


def test_a_dropped_stream_gives_back_its_share(settings: Settings) -> None:
    one = settings.model_copy(update={"per_client_requests": 1})
    engine = Engine.load(one)
    with serve(create_app(one, engine)) as url, httpx.Client(base_url=url, timeout=30) as c:
        release = threading.Event()
        engine.model_thread.submit(lambda: release.wait(20))  # the stream cannot end while this holds the model
        try:
            with c.stream("POST", "/api/generate", json={"prompt": "x", "max_new_tokens": 20}) as r:
                assert r.status_code == 200
        finally:
            release.set()
        deadline = time.monotonic() + 5
        while engine.model_thread.streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.model_thread.streams == 0
        assert c.post("/api/next-token", json={"text": "x"}, timeout=5).status_code == 200  # its turn is free


# ---- faults: a bad model at start-up ----

def start(model: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "--model", model, "--port", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_missing_model_is_one_clear_line_and_a_failure() -> None:
    out = start("/nonexistent/model")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepdive: cannot load the model: /nonexistent/model")


def test_a_missing_second_model_is_one_clear_line_and_a_failure(tiny_checkpoint: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "app", "--model", str(tiny_checkpoint), "--port", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DEEPDIVE_SECOND_MODEL": "/nonexistent/second"})
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepdive: cannot load the second model (DEEPDIVE_SECOND_MODEL): "
                                                   "/nonexistent/second")


@pytest.mark.parametrize("damage", ["config", "weights"])
def test_corrupt_model_is_one_clear_line_and_a_failure(tiny_checkpoint: Path, tmp_path: Path, damage: str) -> None:
    for f in tiny_checkpoint.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    if damage == "config":
        (tmp_path / "config.json").write_text('{"n_layer": ')
    else:
        weights = tmp_path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    out = start(str(tmp_path))
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepdive: cannot load the model"), out.stderr
