"""The JSON API against the real app and a real (tiny, random) model: contents, errors, concurrency."""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient

from app.config import Settings
from app.serving.engine import Engine
from app.serving.streaming import TextStream
from app.main import create_app
from helpers import expect_http_error
from live_server import serve
from model.decode.batching import BatchDecoder
from model.decode.generate import generate
from model.nets.gpt2 import GPT
from model.loading import LoadedModel
from model.decode.sampling import SamplingParams
from model.tokenizers.tokenizer import EOT_ID, gpt2_tokenizer

TEXT = "Hello wörld! A parrot:🦜 and <|endoftext|> typed as text."


@pytest.fixture(scope="module")
def settings(tiny_checkpoint) -> Settings:
    # one torch thread: the tiny model gains nothing from more, and a busy machine loses a lot
    return Settings(model=str(tiny_checkpoint), threads=1, max_text_chars=5000, max_body_bytes=50_000, max_new_tokens=40,
                    max_activation_values=5_000)


def ids_of(text: str) -> list[int]:
    return gpt2_tokenizer().encode(text)


def sse_events(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def stream(client: TestClient, **body) -> tuple[list[dict], dict]:
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [kind for kind, _ in events] == ["token"] * (len(events) - 1) + ["done"]
    return [data for _, data in events[:-1]], events[-1][1]


# ---- model and tokens ----

def test_model_info(client: TestClient, tiny_model: GPT) -> None:
    info = client.get("/api/model").json()
    assert info["parameters"] == tiny_model.num_parameters()
    assert (info["n_layer"], info["n_head"], info["n_embd"], info["n_ctx"], info["vocab_size"]) == (2, 4, 64, 64, 50257)
    assert info["card"] is None  # the test checkpoint has no model card


def test_tokenize_spans_tile_the_text(client: TestClient) -> None:
    r = client.post("/api/tokenize", json={"text": TEXT}).json()
    tokens = r["tokens"]
    assert [t["id"] for t in tokens] == ids_of(TEXT)
    assert EOT_ID not in [t["id"] for t in tokens]  # typed special tokens are ordinary text
    assert b"".join(bytes(t["bytes"]) for t in tokens) == TEXT.encode()
    assert "".join(TEXT[t["start"]:t["end"]] for t in tokens) == TEXT
    assert all(a["end"] == b["start"] for a, b in zip(tokens, tokens[1:]))
    assert any(t["partial"] for t in tokens)  # the emoji is split across tokens
    counts = r["counts"]
    assert counts == {"characters": len(TEXT), "bytes": len(TEXT.encode()), "tokens": len(tokens),
                      "characters_per_token": round(len(TEXT) / len(tokens), 3)}


def test_detokenize_round_trip(client: TestClient) -> None:
    ids = ids_of(TEXT)
    r = client.post("/api/detokenize", json={"ids": ids}).json()
    assert r["text"] == TEXT
    assert [t["id"] for t in r["tokens"]] == ids


def test_bpe_history_ends_in_the_tokens(client: TestClient) -> None:
    text = "lower lowest newer"
    r = client.post("/api/bpe", json={"text": text}).json()
    assert r["tokens"] == ids_of(text)
    assert "".join(r["pretokens"]) == text
    words = [list(w) for w in r["initial"]]
    for n, step in enumerate(r["steps"], 1):
        assert step["step"] == n and step["merged"] == step["left"] + step["right"]
        for change in step["changes"]:
            words[change["pretoken"]] = change["symbols"]
    assert [i for w in words for i in w] == r["tokens"]
    ranks = [s["token_id"] for s in r["steps"]]
    assert ranks == sorted(ranks)  # merges learned earlier apply first
    assert {p["id"] for p in r["pieces"]} >= set(r["tokens"])


def test_vocab_browse_and_search(client: TestClient) -> None:
    page = client.get("/api/vocab", params={"offset": 100, "limit": 5}).json()
    assert page["total"] == 50257 and [e["id"] for e in page["items"]] == [100, 101, 102, 103, 104]
    found = client.get("/api/vocab", params={"q": "ing", "limit": 500}).json()
    assert found["total"] > 500 and len(found["items"]) == 500
    assert all("ing" in e["text"] for e in found["items"])
    by_id = client.get("/api/vocab", params={"q": "50256"}).json()
    assert by_id["items"][0] == {"id": 50256, "text": "<|endoftext|>", "bytes": list(b"<|endoftext|>"),
                                 "partial": False}


# ---- next token, score, activations ----

def model_logits(model: GPT, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids]))[0].float()


def test_next_token_distribution(client: TestClient, tiny_model: GPT) -> None:
    prompt = "The cat sat on the"
    full = client.post("/api/next-token", json={"text": prompt, "n": 50257}).json()
    assert full["prompt_tokens"] == len(ids_of(prompt))
    assert sum(c["prob"] for c in full["before"]) == pytest.approx(1, abs=1e-3)
    assert full["mass"] == pytest.approx(1, abs=1e-3) and full["support"] == 50257
    logits = model_logits(tiny_model, ids_of(prompt))[-1]
    assert full["before"][0]["id"] == int(logits.argmax())
    assert full["before"][0]["logit"] == pytest.approx(float(logits.max()), rel=1e-4)
    assert full["entropy"] == pytest.approx(float(-(logits.softmax(-1) * logits.log_softmax(-1)).sum()), rel=1e-4)

    cut = client.post("/api/next-token", json={"text": prompt, "top_k": 5, "temperature": 0.5, "n": 20,
                                               "targets": [" mat", full["before"][2]["id"], full["before"][9]["id"]]}
                      ).json()
    assert cut["support"] == 5 and len(cut["after"]) == 5
    assert sum(c["prob"] for c in cut["after"]) == pytest.approx(1, abs=1e-4)
    assert [c["id"] for c in cut["after"]] == [c["id"] for c in full["before"][:5]]
    mat, third, tenth = cut["targets"]
    assert mat["id"] == ids_of(" mat")[0] and mat["text"] == " mat"
    assert mat["prob"] == pytest.approx(float(logits.softmax(-1)[mat["id"]]), rel=1e-4)
    assert mat["rank"] == int((logits > logits[mat["id"]]).sum()) + 1
    assert third["rank"] == 3 and third["rank_after"] == 3 and third["prob_after"] > 0
    assert tenth["rank"] == 10 and tenth["rank_after"] is None and tenth["prob_after"] == 0

    greedy = client.post("/api/next-token", json={"ids": ids_of(prompt), "temperature": 0}).json()
    assert greedy["after"] == [{**greedy["before"][0], "prob": 1.0, "logit": 0.0}] and greedy["support"] == 1


def test_score_matches_the_models_loss(client: TestClient, tiny_model: GPT) -> None:
    text = "Once upon a time there was a little cat."
    ids = ids_of(text)
    r = client.post("/api/score", json={"text": text}).json()
    logits = model_logits(tiny_model, ids)
    loss = F.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    assert r["mean_loss"] == pytest.approx(float(loss), rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert [p["id"] for p in r["predictions"]] == ids[1:] and [t["id"] for t in r["tokens"]] == ids
    for p in r["predictions"]:
        assert p["loss"] == pytest.approx(-math.log(p["prob"]), rel=1e-4)
        assert p["top_id"] == int(logits[p["position"] - 1].argmax())
    with_eos = client.post("/api/score", json={"ids": ids, "prepend_eos": True}).json()
    assert [p["id"] for p in with_eos["predictions"]] == ids and with_eos["tokens"][0]["id"] == EOT_ID
    logits = model_logits(tiny_model, [EOT_ID, *ids])
    assert with_eos["mean_loss"] == pytest.approx(float(F.cross_entropy(logits[:-1], torch.tensor(ids))), rel=1e-5)


def test_activations(client: TestClient, tiny_model: GPT) -> None:
    text = "The quick brown fox jumps"
    ids = ids_of(text)
    r = client.post("/api/activations", json={
        "text": text, "attention": [{"layer": 1, "heads": [0, 3]}, {"layer": 0}], "neurons": 3, "logit_lens": 4,
    }).json()
    n = len(ids)
    assert r["positions"] == list(range(n)) and [t["id"] for t in r["tokens"]] == ids
    norms = r["residual_norms"]
    assert norms["labels"] == ["embeddings", "after block 0", "after block 1"]
    assert [len(row) for row in norms["norms"]] == [n] * 3 and all(v > 0 for row in norms["norms"] for v in row)
    assert [(a["layer"], a["head"]) for a in r["attention"]] == [(1, 0), (1, 3), (0, 0), (0, 1), (0, 2), (0, 3)]
    for a in r["attention"]:
        assert [len(row) for row in a["pattern"]] == [q + 1 for q in range(n)]  # causal: keys 0..q
        assert all(sum(row) == pytest.approx(1, abs=1e-4) for row in a["pattern"])
    assert [len(layer["top"]) for layer in r["neurons"]] == [n, n]
    assert all(len(pos) == 3 and pos[0]["value"] >= pos[-1]["value"] for layer in r["neurons"] for pos in layer["top"])
    # the logit lens at the last state is the model's own prediction
    probs = model_logits(tiny_model, ids).softmax(-1)
    top = probs.topk(4, dim=-1)
    last = r["logit_lens"][-1]
    assert len(r["logit_lens"]) == 3 and last["label"] == "after block 1"
    for p, row in enumerate(last["top"]):
        assert [c["id"] for c in row] == top.indices[p].tolist()
        assert [c["prob"] for c in row] == pytest.approx(top.values[p].tolist(), rel=1e-4)

    few = client.post("/api/activations", json={"ids": ids, "positions": [4, 1], "residual_norms": False,
                                                "attention": [{"layer": 0, "heads": [2]}]}).json()
    assert few["positions"] == [1, 4] and few["residual_norms"] is None and few["logit_lens"] is None
    assert [len(row) for row in few["attention"][0]["pattern"]] == [2, 5]


# ---- generation ----

def test_generate_stream_matches_the_model(client: TestClient, tiny_model: GPT) -> None:
    prompt = "Once upon a time"
    tokens, done = stream(client, prompt=prompt, max_new_tokens=12, temperature=0.9, top_k=50, seed=7, n_top=3)
    reference = [s.id for s in generate(tiny_model, ids_of(prompt), SamplingParams(0.9, 50), 12, seed=7)]
    ids = [t["id"] for t in tokens]
    assert ids == reference[:len(ids)]
    assert "".join(t["text"] for t in tokens) + done["text"] == gpt2_tokenizer().decode(ids)
    assert [t["step"] for t in tokens] == list(range(len(ids)))
    assert all(len(t["before"]) == 3 and 0 < t["prob"] <= 1 for t in tokens)
    assert done["finish_reason"] == "length" and done["completion_tokens"] == 12 == len(ids)
    assert done["prompt_tokens"] == len(ids_of(prompt))
    assert done["timings"]["total_ms"] >= done["timings"]["first_token_ms"] > 0
    again, _ = stream(client, prompt=prompt, max_new_tokens=12, temperature=0.9, top_k=50, seed=7, n_top=3)
    assert [t["id"] for t in again] == ids


def test_text_stream_holds_back_half_characters_and_stop_texts() -> None:
    t = TextStream()
    assert [t.push(b) for b in (b"a\xf0\x9f", b"\x99", b"\x82b")] == ["a", "", "\U0001f642b"]
    assert t.flush() == ""
    t = TextStream(["\n\n", "END"])
    assert [t.push(b) for b in (b"one\n", b"two E", b"N", b"D more")] == ["one", "\ntwo ", "", ""]
    assert t.stopped and t.flush() == ""
    t = TextStream(["xyz"])
    assert [t.push(b"ab x"), t.push(b"y"), t.flush()] == ["ab ", "", "xy"]  # never completed: released at the end


def test_stop_text_cuts_the_output(client: TestClient) -> None:
    tokens, _ = stream(client, prompt="The dog", max_new_tokens=20, temperature=0)
    full = "".join(t["text"] for t in tokens)
    stop = full[6:9]
    cut, done = stream(client, prompt="The dog", max_new_tokens=20, temperature=0, stop=["never there", stop])
    assert "".join(t["text"] for t in cut) + done["text"] == full[:full.index(stop)]
    assert done["finish_reason"] == "stop" and len(cut) < len(tokens)


def test_generation_ends_at_the_context(client: TestClient) -> None:
    ids = ids_of("word " * 70)
    _, near = stream(client, prompt=gpt2_tokenizer().decode(ids[:60]), max_new_tokens=30, temperature=0)
    assert near["finish_reason"] == "length" and near["completion_tokens"] == 4 and near["prompt_tokens"] == 60
    tokens, full = stream(client, prompt=gpt2_tokenizer().decode(ids[:64]), max_new_tokens=5)
    assert tokens == [] and full["finish_reason"] == "length" and full["completion_tokens"] == 0
    _, empty = stream(client, prompt="", max_new_tokens=3, temperature=0)
    assert empty["prompt_tokens"] == 1 and empty["completion_tokens"] == 3  # started from <|endoftext|>


def test_end_of_text_finishes_with_eos(tiny_model: GPT, tiny_checkpoint, settings: Settings) -> None:
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():  # every position's final state points at <|endoftext|>'s embedding
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(model.wte.weight[EOT_ID] * 50)
    loaded = LoadedModel(model=model, name="eos", source="test", path=tiny_checkpoint, config=model.config,
                         dtype=torch.float32, card=None)
    with TestClient(create_app(settings, Engine(loaded, settings))) as c:
        tokens, done = stream(c, prompt="Hi", max_new_tokens=10, temperature=0)
        assert tokens == [] and done["finish_reason"] == "eos" and done["completion_tokens"] == 0
        r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 10, "temperature": 0}).json()
        assert r["choices"][0]["finish_reason"] == "stop" and r["choices"][0]["text"] == ""


# ---- bad input: a 4xx that says what was wrong ----

BAD = [
    ("/api/tokenize", {"text": "x", "colour": "red"}, 422, "Remove colour: it is not a field of this request; the fields are: text."),
    ("/api/tokenize", {"text": "x" * 5001}, 413, "The text is 5,001 characters; the limit is 5,000: shorten it."),
    ("/api/tokenize", {}, 422, "Add text: it is required."),
    ("/api/tokenize", [1, 2], 422, "Send a JSON object as the body, not [1, 2]."),
    ("/api/detokenize", {"ids": [50257]}, 422, "The id 50257 is not a token of this model: use ids from 0 to 50,256."),
    ("/api/detokenize", {"ids": [262144]}, 422, "Fix ids.0: input should be less than 262144 (got 262144)."),
    ("/api/bpe", {"text": "ab " * 700}, 413, "2,100 UTF-8 bytes; the merge history is shown for at most 2,000"),
    ("/api/next-token", {"text": "x", "ids": [1]}, 422, "Give the input either as text or as ids (exactly one of the two)."),
    ("/api/next-token", {"text": ""}, 422, "The input is empty: give at least one token."),
    ("/api/next-token", {"text": " ".join(["word"] * 70)}, 422, "The prompt is 70 tokens; this model reads at most 64: shorten it."),
    ("/api/next-token", {"text": "x", "top_k": -1}, 422, "Fix top_k: input should be greater than or equal to 0 (got -1)."),
    ("/api/next-token", {"text": "x", "top_p": 0}, 422, "Fix top_p: input should be greater than or equal to 0.000001 (got 0)."),
    ("/api/next-token", {"text": "x", "temperature": "hot"}, 422, "Fix temperature: input should be a valid number"),
    ("/api/next-token", {"text": "x", "targets": ["hello world"]}, 422, "is 2 tokens"),
    ("/api/score", {"text": "Hi"}, 422, "Scoring needs at least two tokens"),
    ("/api/activations", {"text": "a b", "attention": [{"layer": 2}]}, 422, "Layer 2 does not exist: this model has 2 layers, so choose 0 to 1."),
    ("/api/activations", {"text": "a b", "attention": [{"layer": 0, "heads": [4]}]}, 422, "Head 4 does not exist"),
    ("/api/activations", {"text": "a b", "positions": [5]}, 422, "Position 5 is past the prompt's end"),
    ("/api/activations", {"text": "a " * 60, "neurons": 50, "logit_lens": 20}, 413, "the limit is 5,000"),
    ("/api/generate", {"prompt": "x", "max_new_tokens": 41}, 422,
     "The field max_new_tokens is 41; this server generates at most 40 tokens per request: ask for fewer."),
    ("/api/generate", {"prompt": " ".join(["word"] * 65)}, 422, "The prompt is 65 tokens; this model reads at most 64: shorten it."),
    ("/api/generate", {"prompt": "x", "stop": [""]}, 422, "Fix stop.0: string should have at least 1 character"),
    ("/api/generate", {"prompt": "x", "seed": -1}, 422, "Fix seed: input should be greater than or equal to 0 (got -1)."),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD, ids=[f"{p} {m[:30]}" for p, _, _, m in BAD])
def test_bad_input_is_refused_with_a_reason(client: TestClient, path: str, body, status: int, message: str) -> None:
    # a sentence a person can act on, whatever the field: a capital letter, a full stop
    said = expect_http_error(client.post(path, json=body), status, re.escape(message))
    assert said[0].isupper() and said.endswith("."), said


@pytest.mark.parametrize("raw", ['{"text": "x", "temperature": NaN}', '{"text": "x", "top_p": Infinity}',
                                 '{"text": "x", "temperature": -Infinity}'])
def test_non_finite_numbers_are_refused(client: TestClient, raw: str) -> None:
    r = client.post("/api/next-token", content=raw, headers={"content-type": "application/json"})
    expect_http_error(r, 422, r"^Fix (temperature|top_p): ")


def test_wrong_content_type_size_and_json(client: TestClient) -> None:
    r = client.post("/api/tokenize", content='{"text": "x"}', headers={"content-type": "text/plain"})
    expect_http_error(r, 415, "Content-Type: application/json")
    r = client.post("/api/tokenize", data={"text": "x"})  # a form
    expect_http_error(r, 415, "Content-Type: application/json")
    r = client.post("/api/tokenize", content='{"text": "x"', headers={"content-type": "application/json"})
    expect_http_error(r, 422, "^Send valid JSON: the body is not")
    r = client.post("/api/tokenize", json={"text": "x" * 60_000})
    expect_http_error(r, 413, "this server accepts at most 50,000")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds as the body streams in
        yield b'{"text": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    r = client.post("/api/tokenize", content=chunks(), headers={"content-type": "application/json"})
    expect_http_error(r, 413, "this server accepts at most 50,000")


def test_lone_surrogates_are_replaced(client: TestClient) -> None:
    r = client.post("/api/tokenize", content='{"text": "a\\ud800b"}', headers={"content-type": "application/json"})
    assert r.status_code == 200 and "".join(t["text"] for t in r.json()["tokens"]) == "a\ufffdb"


# ---- concurrency ----

def test_tokenize_does_not_wait_for_the_model(client: TestClient, engine: Engine) -> None:
    release = threading.Event()
    busy = engine.model_thread.submit(lambda: release.wait(20))  # the model thread is now occupied
    try:
        start = time.monotonic()
        assert client.post("/api/tokenize", json={"text": TEXT}).status_code == 200
        assert client.get("/api/vocab", params={"q": "the"}).status_code == 200
        assert time.monotonic() - start < 5
        assert engine.model_thread.queued == 0 and not busy.done()
    finally:
        release.set()
    assert busy.result(timeout=10) is True


def test_a_full_queue_answers_503(settings: Settings, tiny_checkpoint) -> None:
    small = settings.model_copy(update={"max_queue": 1})
    engine = Engine.load(small)
    with TestClient(create_app(small, engine)) as c:
        release = threading.Event()
        engine.model_thread.submit(lambda: release.wait(20))
        while engine.model_thread.queued:  # until it runs
            time.sleep(0.01)
        engine.model_thread.submit(lambda: None)  # waiting: the queue is full
        try:
            r = c.post("/api/next-token", json={"text": "x"})
            expect_http_error(r, 503, "try again")
            assert r.headers["retry-after"] == "1"
        finally:
            release.set()
        assert c.post("/api/next-token", json={"text": "x"}).status_code == 200


@pytest.fixture(scope="module")
def live(settings: Settings, engine: Engine) -> Iterator[str]:
    with serve(create_app(settings, engine)) as url:
        yield url


def read_events(response: httpx.Response) -> list[tuple[str, dict]]:
    return sse_events(response.read().decode())


def test_a_slow_reader_does_not_stall_other_streams(live: str) -> None:
    body = {"prompt": "Once", "max_new_tokens": 40, "temperature": 0, "n_top": 20}
    with httpx.Client(base_url=live, timeout=30) as a, httpx.Client(base_url=live, timeout=30) as b:
        with a.stream("POST", "/api/generate", json=body) as slow:
            assert slow.status_code == 200  # and not read until the other stream is done
            start = time.monotonic()
            fast = b.post("/api/generate", json=body)
            assert fast.status_code == 200 and time.monotonic() - start < 10
            slow_events = read_events(slow)
    # every token was kept for the slow reader (the two may differ: batched sums round differently,
    # and a random model's logits are all near-ties)
    tokens, done = [data for _, data in slow_events[:-1]], slow_events[-1][1]
    assert done["completion_tokens"] == len(tokens) == 40 and done["finish_reason"] == "length"
    assert "".join(t["text"] for t in tokens) + done["text"] == gpt2_tokenizer().decode([t["id"] for t in tokens])
    assert sse_events(fast.text)[-1][1]["completion_tokens"] == 40


def test_disconnect_stops_generation_within_a_step(live: str, engine: Engine, monkeypatch) -> None:
    steps = []
    real_step = BatchDecoder.step

    def slow_step(self: BatchDecoder):  # 60 steps of 50 ms: a generation that outlasts the client
        time.sleep(0.05)
        steps.append(time.monotonic())
        return real_step(self)

    monkeypatch.setattr(BatchDecoder, "step", slow_step)
    with httpx.Client(base_url=live, timeout=30) as c:
        with c.stream("POST", "/api/generate", json={"prompt": "x", "max_new_tokens": 40, "seed": 1}) as r:
            next(r.iter_lines())  # the first event has begun: the stream is running
            assert engine.model_thread.streams == 1
        gone = time.monotonic()
    while engine.model_thread.streams and time.monotonic() - gone < 5:
        time.sleep(0.01)
    assert engine.model_thread.streams == 0
    time.sleep(0.2)
    assert len([t for t in steps if t > gone]) <= 3  # the step under way, perhaps one more; not the other 35
