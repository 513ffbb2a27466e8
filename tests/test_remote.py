"""A model on a serving engine (app/serving/remote.py, app/serving/sources.py), against real servers on real sockets: a second
Deep Dive, whose /v1/completions speaks the OpenAI protocol as vLLM does, and small HTTP servers that refuse,
stall or answer what the protocol does not allow."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import anyio
import pytest
import torch
from fastapi.testclient import TestClient
from helpers import expect_http_error
from live_server import serve

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from app.serving.remote import RemoteError, RemoteModel
from model.nets.gpt2 import GPT
from model.tokenizers.tokenizer import gpt2_tokenizer

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def upstream(tiny_checkpoint) -> Iterator[str]:
    """The stand-in for vLLM: another Deep Dive serving the tiny model."""
    settings = Settings(model=str(tiny_checkpoint), threads=1, max_new_tokens=40)
    with serve(create_app(settings, Engine.load(settings))) as url:
        yield url


@pytest.fixture(scope="module")
def client(tiny_checkpoint, upstream: str) -> Iterator[TestClient]:
    settings = Settings(model=str(tiny_checkpoint), threads=1, max_new_tokens=40, remote_url=upstream,
                        remote_model="tiny-remote")
    with TestClient(create_app(settings)) as c:
        yield c


def logprobs_after(model: GPT, text: str) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([gpt2_tokenizer().encode(text)]))[0].log_softmax(-1)


def remote_call(url: str, method: str, *args, timeout_s: float = 30.0):
    async def go():
        remote = RemoteModel(url, "tiny", timeout_s=timeout_s)
        try:
            result = getattr(remote, method)(*args)
            return await result if method != "stream" else [p async for p in await result]
        finally:
            await remote.close()

    return anyio.run(go)


# ---------------------------------------------------------------- the protocol, against a real server

def test_echo_gives_each_prompt_tokens_logprob(upstream: str, tiny_model: GPT) -> None:
    import httpx
    r = httpx.post(f"{upstream}/v1/completions", json={"prompt": PROMPT, "echo": True, "logprobs": 1,
                                                       "max_tokens": 1, "temperature": 0})
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    ids = gpt2_tokenizer().encode(PROMPT)
    assert choice["text"].startswith(PROMPT) and lp["tokens"][:4] == ["Once", " upon", " a", " time"]
    assert lp["text_offset"] == [0, 4, 9, 11, 16] and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    expected = logprobs_after(tiny_model, PROMPT)
    assert lp["token_logprobs"][1:4] == pytest.approx([float(expected[i, ids[i + 1]]) for i in range(3)], abs=1e-4)
    best = [max(d.values()) for d in lp["top_logprobs"][1:4]]
    assert best == pytest.approx([float(expected[i].max()) for i in range(3)], abs=1e-4)


def test_echo_refuses_what_it_cannot_give(upstream: str) -> None:
    import httpx
    for extra, words in (({"stream": True}, "without stream"), ({"logprobs": 3}, "logprobs can be 0 or 1")):
        r = httpx.post(f"{upstream}/v1/completions", json={"prompt": "x", "echo": True, **extra})
        expect_http_error(r, 422, re.escape(words))


def test_next_token_candidates_are_the_models_top_logprobs(upstream: str, tiny_model: GPT) -> None:
    got = remote_call(upstream, "next_token", PROMPT, 5)
    last = logprobs_after(tiny_model, PROMPT)[-1]
    top = last.topk(5)
    assert [a.text for a in got] == [gpt2_tokenizer().decode([i]) for i in top.indices.tolist()]
    assert [a.logprob for a in got] == pytest.approx(top.values.tolist(), abs=1e-4)


def test_streamed_generation_is_the_servers_greedy_text(client: TestClient, upstream: str) -> None:
    import httpx
    whole = httpx.post(f"{upstream}/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0})
    r = client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 8, "temperature": 0,
                                                  "model": "remote", "n_top": 3})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [(m[0], json.loads(m[1])) for m in re.findall(r"event: (\w+)\ndata: (.*)\n\n", r.text)]
    tokens = [d for name, d in events if name == "token"]
    assert "".join(d["text"] for d in tokens) == whole.json()["choices"][0]["text"]
    assert len(tokens) == 8 and all(len(d["before"]) == 3 and d["prob"] is None for d in tokens)
    # greedy: each token is its step's most likely, with the probability the server listed for it
    assert all(d["raw_prob"] == pytest.approx(d["before"][0]["prob"]) for d in tokens)
    done = events[-1][1]
    assert events[-1][0] == "done" and done["finish_reason"] == "length" and done["prompt_tokens"] == 4


def test_loss_page_colours_the_text_by_the_remotes_echo(client: TestClient, tiny_model: GPT) -> None:
    text = "Once upon a time there was a cat"
    r = client.post("/partials/loss", data={"text": text, "model": "remote"})
    assert r.status_code == 200 and "Scored by tiny-remote (served by 127.0.0.1:" in r.text
    assert "Knowing nothing" not in r.text  # the server does not say its vocabulary
    expected = logprobs_after(tiny_model, text)
    ids = gpt2_tokenizer().encode(text)
    mean = -sum(float(expected[i, ids[i + 1]]) for i in range(len(ids) - 1)) / (len(ids) - 1)
    assert re.search(r'data-stat="mean-loss">([^<]*)', r.text).group(1) == f"{mean:.2f}"
    assert len(re.findall(r'<span class="chip c\d loss-\d', r.text.split("<h3>")[0])) == len(ids) - 1
    page = client.get("/loss", params={"text": text, "model": "remote"})
    assert page.status_code == 200 and f'>{mean:.2f}<' in page.text
    assert '<option value="remote" selected>' in page.text
    assert "Model on this page: <strong>tiny-remote</strong>, served by 127.0.0.1:" in page.text  # not the loaded one


# ---------------------------------------------------------------- the stepper on the remote model

def stepper(client: TestClient, steps: str = "", **form) -> tuple[str, dict]:
    data = {"prompt": PROMPT, "steps": steps, "temperature": "1", "top_k": "0", "top_p": "1", "seed": "42",
            "n": "5", "model": "remote", **form}
    r = client.post("/partials/inference", data=data)
    assert r.status_code == 200, r.text
    return r.text, {k: v[0] for k, v in parse_qs(urlparse(r.headers["HX-Replace-Url"]).query).items()}


def said(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_stepper_takes_steps_on_the_remote_and_a_link_restores_them(client: TestClient, tiny_model: GPT) -> None:
    tok = gpt2_tokenizer()
    best = tok.decode([int(logprobs_after(tiny_model, PROMPT)[-1].argmax())])
    body, query = stepper(client, action="greedy")
    assert query["steps"] == f"remote~g{said(best)}~t100" and query["model"] == "remote"  # with its settings
    assert "runs on 127.0.0.1" in body and "the most likely" in body
    # a bar is a candidate the server sent; choosing the third takes its text
    third = tok.decode([int(logprobs_after(tiny_model, PROMPT + best)[-1].topk(3).indices[2])])
    body, query = stepper(client, steps=query["steps"], pick="2")
    assert query["steps"] == f"remote~g{said(best)}~t100.h{said(third)}~t100"
    # sampling is seeded by the step number: the same link samples the same token
    _, q1 = stepper(client, steps=query["steps"], action="sample")
    _, q2 = stepper(client, steps=query["steps"], action="sample")
    assert q1["steps"] == q2["steps"] and q1["steps"].startswith(query["steps"] + ".s")
    page = client.get("/inference", params=q1)
    assert page.status_code == 200
    assert re.findall(r"<td>((?:sampled|the most likely|chosen by hand)[^<]*)</td>", page.text) == [
        "sampled, seed 44 (temperature 1)", "chosen by hand (temperature 1)", "the most likely (temperature 1)"]
    assert f'value="{q1["steps"]}"' in page.text and "could not be read" not in page.text
    _, q3 = stepper(client, steps=q1["steps"], action="undo")
    assert q3["steps"] == query["steps"]


def test_a_mangled_remote_link_starts_from_the_prompt(client: TestClient) -> None:
    too_many = "remote~" + ".".join(["g" + said("a")] * 257)  # each step would be asked again: at most 256
    for steps in ("remote~g!!", "remote~x12", "g318", "remote~g" + said("a") + ".", "remote~g_w", too_many):
        page = client.get("/inference", params={"model": "remote", "steps": steps})
        assert page.status_code == 200 and "could not be read" in page.text, steps


def test_internals_says_a_remote_model_needs_its_weights(client: TestClient) -> None:
    page = client.get("/internals", params={"model": "remote"})
    assert page.status_code == 200
    assert "Looking inside tiny-remote needs its weights, which stay on the model server" in page.text


# ---------------------------------------------------------------- what goes wrong, on real sockets

class Misbehaving(BaseHTTPRequestHandler):
    """/slow/... answers after 3 s; /error/... 500; /garbage/... not JSON; /bare/... JSON without logprobs;
    /nan/... a NaN log-probability; /cut/... a stream that stops without [DONE] mid-JSON."""

    def do_POST(self) -> None:  # the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        kind = self.path.split("/")[1]
        if kind == "slow":
            time.sleep(3)
        status, body = {
            "error": (500, b'{"error": {"message": "CUDA out of memory"}}'),
            "garbage": (200, b"<html>not an API</html>"),
            "bare": (200, b'{"choices": [{"text": " hi", "finish_reason": "length"}]}'),
            "nan": (200, (b'{"choices": [{"text": "x", "logprobs": {"tokens": ["x"], "token_logprobs": [NaN], '
                          b'"top_logprobs": [{"x": NaN}], "text_offset": [0]}}]}')),
            "cut": (200, b'data: {"choices": [{"text": "a", "index": 0}]}\n\ndata: {"choi'),
            # TGI's documented /v1/completions answer: logprobs a bare list of numbers
            "tgi": (200, b'{"choices": [{"index": 0, "text": " hi", "logprobs": [-0.5], "finish_reason": "length"}]}'),
            # llama.cpp's shape, as it writes a token that is the first half of an emoji's four bytes
            "half": (200, ('{"choices": [{"text": "", "logprobs": {"content": [{"id": 9, "token": "", "bytes": [240, 159],'
                           ' "logprob": -0.1, "top_logprobs": [{"id": 7, "token": " a", "bytes": [32, 97], "logprob":'
                           ' -2.5}, {"id": 9, "token": "", "bytes": [240, 159], "logprob": -0.1}]}]}}]}').encode()),
        }.get(kind, (200, b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream" if kind == "cut" else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client gave up waiting
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def bad() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("where, status, words", [
    ("error", 502, "answered 500 Internal Server Error: CUDA out of memory"),
    ("garbage", 502, "cannot read (an answer that is not JSON)"),
    ("bare", 502, "cannot read (no top_logprobs for the next token)"),
    ("nan", 502, "cannot read (choices.0.logprobs.token_logprobs.0"),
    ("tgi", 502, "cannot read (logprobs without tokens or alternatives, as TGI's completions send)"),
])
def test_a_bad_answer_is_a_sentence(bad: str, where: str, status: int, words: str) -> None:
    with pytest.raises(RemoteError) as e:
        remote_call(f"{bad}/{where}", "next_token", "x", 3)
    assert e.value.status == status and words in str(e.value)
    assert str(e.value).startswith("The model server at 127.0.0.1:")


def test_llamacpps_shape_is_read_and_half_a_character_shows_as_its_bytes(bad: str) -> None:
    got = remote_call(f"{bad}/half", "next_token", "x", 5)
    assert [(a.text, a.id, a.whole) for a in got] == [("\\xf0\\x9f", 9, False), (" a", 7, True)]
    assert [a.logprob for a in got] == [-0.1, -2.5]


def test_a_refused_connection_and_a_stall_are_sentences(bad: str) -> None:
    with pytest.raises(RemoteError, match="refused the connection: check that it is running") as e:
        remote_call(closed_port(), "score", "x y")
    assert e.value.status == 502
    started = time.monotonic()
    with pytest.raises(RemoteError, match=r"did not answer within 0.5 s") as e:
        remote_call(f"{bad}/slow", "next_token", "x", 3, timeout_s=0.5)
    assert e.value.status == 504 and time.monotonic() - started < 2.5


def test_a_stream_cut_short_is_a_sentence(bad: str) -> None:
    with pytest.raises(RemoteError, match="cannot read"):
        remote_call(f"{bad}/cut", "stream", "x", 4, 1.0, 0, 1.0, None, [], 0)


@pytest.fixture(scope="module")
def broken(tiny_checkpoint, bad: str) -> Iterator[TestClient]:
    """An app whose remote server is down."""
    settings = Settings(model=str(tiny_checkpoint), threads=1, remote_url=closed_port(), remote_model="big",
                        remote_timeout_s=0.5)
    with TestClient(create_app(settings)) as c:
        yield c


def test_pages_show_a_downed_remote_as_a_message(broken: TestClient) -> None:
    page = broken.get("/inference", params={"model": "remote"})
    assert page.status_code == 200 and "refused the connection" in page.text
    body, _ = stepper(broken, action="greedy")
    assert '<p class="message error" role="alert">The model server at' in body
    r = broken.post("/partials/loss", data={"text": "Once upon a time", "model": "remote"})
    assert r.status_code == 200 and "refused the connection" in r.text
    # the loaded model is still there, beside it
    page = broken.get("/inference", params={"compare": "remote"})
    assert page.status_code == 200 and page.text.count('class="models-column"') == 2
    assert "refused the connection" in page.text


def test_the_stream_api_answers_502_with_a_sentence(broken: TestClient) -> None:
    r = broken.post("/api/generate", json={"prompt": "Hi", "model": "remote"})
    message = expect_http_error(r, 502, "^The model server at 127\\.0\\.0\\.1:")
    assert "refused the connection" in message
