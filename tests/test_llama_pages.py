"""What only a Llama-family model shows on the pages and endpoints: tiny random checkpoints saved by
transformers (tests/llama_fixtures.py, started once in conftest.py), each with its own tokenizer.json,
loaded into an Engine as the server loads any model. The page walks every model passes run in
test_pages.py, over GPT-2 and these models.

The figures are checked against the reference libraries: token ids against Hugging Face `tokenizers`, the
logit lens, the scores and greedy generation against transformers' own model read from the same files.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import tokenizers
import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from helpers import expect_http_error
from model.probes import analysis

PROMPT = "Once upon a time"


def serve(directory: Path) -> tuple[Engine, TestClient]:
    engine = Engine.load(Settings(model=str(directory), max_new_tokens=40))
    return engine, TestClient(create_app(engine.settings, engine))


@pytest.fixture(scope="module")
def checkpoints(llama_checkpoints: dict) -> dict:
    """variant -> (checkpoint directory, transformers' model read from it): conftest.LLAMA_VARIANTS."""
    return llama_checkpoints


@pytest.fixture(scope="module")
def served(llama_served: dict) -> dict:
    """variant -> (engine, client), every app started once (conftest)."""
    return llama_served


@pytest.fixture(scope="module")
def engine(served: dict) -> Engine:
    return served["llama"][0]  # grouped-query attention (4 query heads, 2 KV heads), tied head, Llama 3's tokenizer


@pytest.fixture(scope="module")
def client(served: dict) -> TestClient:
    return served["llama"][1]


@pytest.fixture(scope="module")
def reference(checkpoints: dict) -> torch.nn.Module:
    return checkpoints["llama"][1]


def hf_tokenizer(checkpoints: dict, variant: str = "llama") -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(checkpoints[variant][0] / "tokenizer.json"))


def sse_events(body: str) -> list[tuple[str, dict]]:
    return [(kind, json.loads(data)) for kind, data in re.findall(r"event: (\w+)\ndata: (.*)\n\n", body)]


@torch.no_grad()
def greedy(model: torch.nn.Module, ids: list[int], n: int, eos: int) -> list[int]:
    out = []
    for _ in range(n):
        best = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
        if best == eos:
            break
        out.append(best)
    return out


# The walks every model passes (each page renders, the chips, the comparison, the BPE replay, the
# vocabulary browser) are written once in test_pages.py, over GPT-2 and these models.

# ---- tokenizer page ----

def test_byte_fallback_tokens_are_bytes(served: dict, checkpoints: dict) -> None:
    """SentencePiece-style: a character the vocabulary lacks becomes its UTF-8 bytes, one <0x..> token each."""
    _, client = served["mistral"]
    api = client.post("/api/tokenize", json={"text": "☃"}).json()["tokens"]
    assert [t["bytes"] for t in api if t["bytes"] != [32]] == [[0xE2], [0x98], [0x83]]
    assert [t["partial"] for t in api if t["bytes"] != [32]] == [True, True, True]
    page = client.get("/tokenizer").text
    assert "&lt;0xE2&gt;" in page and "single\n    characters" in page


def test_special_tokens_typed_as_text_are_text(client: TestClient, checkpoints: dict, engine: Engine) -> None:
    im_start = engine.tokenizer.encode("<|im_start|>", allow_special=True)
    assert len(im_start) == 1 and im_start[0] in engine.special_ids
    typed = "<|im_start|>user hi<|im_end|>"
    ref = hf_tokenizer(checkpoints)
    ref.encode_special_tokens = True
    ids = [t["id"] for t in client.post("/api/tokenize", json={"text": typed}).json()["tokens"]]
    assert ids == ref.encode(typed, add_special_tokens=False).ids and not set(ids) & engine.special_ids
    body = client.post("/partials/tokens", data={"text": typed}).text
    assert " eot" not in body and "special token" not in body


def test_special_tokens_shown_as_what_they_are(client: TestClient, engine: Engine) -> None:
    page = client.get("/tokenizer").text
    for name in ("&lt;|begin_of_text|&gt;", "&lt;|im_start|&gt;"):
        assert f"<code>{name}</code>" in page  # named in the vocabulary's introduction
    assert "50,257" not in page
    assert "A text starts after <code>&lt;|begin_of_text|&gt;</code>" in page
    body = client.get("/partials/vocab", params={"q": "<|im_start|>"}).text
    assert re.search(r'<span class="chip c\d eot">&lt;\|im_start\|&gt;</span>\s*<span class="bytes">special token</span>',
                     body)
    entry = client.get("/api/vocab", params={"q": "<|im_start|>"}).json()["items"][0]
    assert entry["text"] == "<|im_start|>" and entry["id"] in engine.special_ids


# ---- internals and the model's facts ----

def test_model_info_counts_what_the_module_has(client: TestClient, engine: Engine) -> None:
    info = client.get("/api/model").json()
    model = engine.loaded.model
    assert info["parameters"] == model.num_parameters()
    assert info["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert info["parameters"]["position_embedding"] == 0 and "lm_head" not in info["parameters"]
    assert (info["model_type"], info["n_head"], info["n_kv_head"], info["head_dim"], info["n_inner"]) == (
        "llama", 4, 2, 16, 96)
    assert (info["positions"], info["norm"], info["mlp"], info["tied_head"]) == ("rotary", "rmsnorm", "swiglu", True)
    assert info["final_norm"] == 64 and info["tokenizer_vocab_size"] == info["vocab_size"] == 401


def test_internals_shows_grouped_heads_and_no_position_table(client: TestClient) -> None:
    body = client.get("/internals").text
    assert re.search(r"4 query heads sharing 2 key/value heads, of\s+16 numbers each", body)
    assert 'data-positions="rotary"' in body and "positions are rotations inside attention" in body
    assert "Position embedding" not in body and "position embedding" not in body
    assert "Final RMS norm" in body and "RMS norms" in body
    assert "In this model, " in body  # the heads measured on the probe, in the model's own tokens
    assert "<strong>Final RMS norm</strong>\n        <span>scales the stream before reading it out</span>\n" \
           "        <span class=\"arch-count\">64</span>" in body
    overview = client.get("/").text
    assert "4 query heads sharing\n        2 key/value heads" in overview and "pb-position_embedding" not in overview


def test_untied_head_is_its_own_part(served: dict) -> None:
    engine, client = served["llama-untied"]
    lm_head = engine.loaded.model.lm_head.weight.numel()
    info = client.get("/api/model").json()
    assert info["tied_head"] is False and info["parameters"]["lm_head"] == lm_head
    body = client.get("/internals").text
    assert "lm head (untied)" in body and f'<span class="arch-count">{lm_head:,}</span>' in body
    assert "4 heads of 16 numbers" in body and "key/value heads" not in body


def test_logit_lens_goes_through_the_final_rmsnorm(client: TestClient, engine: Engine, reference) -> None:
    ids = engine.tokenizer.encode(PROMPT)
    r = client.post("/api/activations", json={"text": PROMPT, "logit_lens": 5, "residual_norms": False}).json()
    with torch.no_grad():
        out = reference(torch.tensor([ids]), output_hidden_states=True)
        # transformers' hidden states are each block's input, then the last block's output already normed
        states = [reference.model.norm(h) for h in out.hidden_states[:-1]]
        want = [reference.lm_head(h)[0].softmax(-1) for h in states] + [out.logits[0].softmax(-1)]
    assert len(r["logit_lens"]) == len(want) == engine.config.n_layer + 1
    for state, probs in zip(r["logit_lens"], want):
        for row, p in zip(state["top"], probs):
            top = p.topk(5)
            assert [c["id"] for c in row] == top.indices.tolist()
            assert [c["prob"] for c in row] == pytest.approx(top.values.tolist(), abs=1e-4)
    full = analysis.activations(engine.loaded.model, ids, logit_lens=engine.config.vocab_size)
    for state in full["logit_lens"]:
        for row in state["top"]:
            assert sum(c["prob"] for c in row) == pytest.approx(1, abs=1e-4)


# ---- inference and playground ----

def act(client: TestClient, steps: str = "", **form) -> tuple[str, dict]:
    data = {"prompt": PROMPT, "steps": steps, "temperature": "1", "top_k": "0", "top_p": "1", "seed": "42", "n": "10",
            **form}
    r = client.post("/partials/inference", data=data)
    assert r.status_code == 200, r.text
    return r.text, {k: v[0] for k, v in parse_qs(urlparse(r.headers["HX-Replace-Url"]).query).items()}


def test_inference_steps_on_the_models_tokens(client: TestClient, engine: Engine, reference) -> None:
    ids = engine.tokenizer.encode(PROMPT)
    with torch.no_grad():
        best = int(reference(torch.tensor([ids])).logits[0, -1].argmax())
    if best == engine.eos_id:
        pytest.skip("the random model's first choice ends the text")
    _, query = act(client, action="greedy")
    assert query["steps"] == f"g{best}t100"
    restored = client.get("/inference", params={"prompt": PROMPT, "steps": f"g{best}"}).text
    assert "could not be read" not in restored and html.escape(engine.texts[best]) in restored
    _, query = act(client, steps=f"g{best}", action="sample")
    assert re.fullmatch(rf"g{best}\.s\d+t100r43", query["steps"])
    body, query = act(client, pick=str(engine.eos_id))
    assert "The model chose &lt;|end_of_text|&gt;: it thinks the text is finished" in body
    assert "steps" not in query
    link = client.get("/inference", params={"prompt": PROMPT, "steps": f"g{engine.eos_id}"}).text
    assert "This link&#39;s steps could not be read" in link  # the end of text never joins it


def test_playground_generates_what_transformers_would(client: TestClient, engine: Engine, reference) -> None:
    ids = engine.tokenizer.encode(PROMPT)
    r = client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    want = greedy(reference, ids, 6, engine.eos_id)
    assert [d["id"] for kind, d in events if kind == "token"] == want
    done = events[-1][1]
    assert done["finish_reason"] == ("length" if len(want) == 6 else "eos")
    text = "".join(d["text"] for kind, d in events if kind == "token") + done["text"]
    assert text == engine.tokenizer.decode(want)


def test_empty_prompt_starts_from_the_beginning_of_text(client: TestClient, engine: Engine, reference) -> None:
    assert engine.start_id == 0 == engine.tokenizer.encode("<|begin_of_text|>", allow_special=True)[0]
    r = client.post("/api/generate", json={"prompt": "", "max_new_tokens": 4, "temperature": 0})
    tokens = [d["id"] for kind, d in sse_events(r.text) if kind == "token"]
    assert tokens == greedy(reference, [0], 4, engine.eos_id)
    assert sse_events(r.text)[-1][1]["prompt_tokens"] == 1


# ---- the JSON API on the model ----

def test_score_starts_from_the_start_token(client: TestClient, engine: Engine, reference) -> None:
    ids = engine.tokenizer.encode(PROMPT)
    r = client.post("/api/score", json={"text": PROMPT, "prepend_eos": True}).json()
    with torch.no_grad():
        logp = reference(torch.tensor([[engine.start_id, *ids]])).logits[0, :-1].log_softmax(-1)
    want = logp[torch.arange(len(ids)), torch.tensor(ids)]
    assert [p["id"] for p in r["predictions"]] == ids
    assert [p["loss"] for p in r["predictions"]] == pytest.approx((-want).tolist(), abs=1e-4)
    assert r["mean_loss"] == pytest.approx(float(-want.mean()), abs=1e-4)


def test_untied_model_without_a_beginning_token_starts_after_its_end_token(served: dict) -> None:
    engine, client = served["llama-untied"]  # SmolLM2's shape of tokenizer: nothing added in front
    assert engine.tokenizer.bos_ids == [] and engine.start_id == engine.eos_id == 1
    ids = engine.tokenizer.encode(PROMPT)
    r = client.post("/api/score", json={"ids": ids, "prepend_eos": True}).json()
    assert len(r["predictions"]) == len(ids)


def test_api_endpoints_answer_with_the_model(client: TestClient, engine: Engine, checkpoints: dict) -> None:
    ref = hf_tokenizer(checkpoints)
    ids = ref.encode(PROMPT, add_special_tokens=False).ids
    assert client.post("/api/detokenize", json={"ids": ids}).json()["text"] == PROMPT
    bad = client.post("/api/detokenize", json={"ids": [401]})
    expect_http_error(bad, 422, "^" + re.escape("The id 401 is not a token of this model: use ids from 0 to 400.") + "$")
    nxt = client.post("/api/next-token", json={"ids": ids, "n": 401}).json()
    assert nxt["support"] == 401 and nxt["mass"] == pytest.approx(1, abs=1e-3)
    assert {c["id"]: c["text"] for c in nxt["before"]} == {c["id"]: engine.texts[c["id"]] for c in nxt["before"]}
    act = client.post("/api/activations", json={"ids": ids, "attention": [{"layer": 1}]}).json()
    assert len(act["attention"]) == 4  # one pattern per query head, though only 2 key/value heads
    for a in act["attention"]:
        assert all(sum(row) == pytest.approx(1, abs=1e-4) for row in a["pattern"])
    heads = client.post("/partials/heads", data={"on": "prompt", "prompt": "the cat sat. the cat sat.", "sort": "induction"})
    assert heads.status_code == 200 and len(re.findall(r"data-head-pick", heads.text)) == 2 * 4  # every query head
    completion = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3, "temperature": 0,
                                                      "logprobs": 1, "echo": True})
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["text"].startswith(PROMPT)


def test_rows_no_token_uses_are_named_and_refused_as_text(tmp_path: Path) -> None:
    """Qwen2.5's embedding has 151,936 rows for 151,665 tokens: the rows past the tokenizer have no text."""
    from llama_fixtures import SMALL, TOKENIZERS, VARIANTS, randomize

    config_class, model_class, tokenizer, options = VARIANTS["qwen2"]
    tok = TOKENIZERS[tokenizer]()
    size = tok.get_vocab_size()
    model = model_class(config_class(vocab_size=size + 7, **SMALL, **options)).eval()
    randomize(model, seed=1)
    model.save_pretrained(tmp_path)
    tok.save(str(tmp_path / "tokenizer.json"))
    engine, client = serve(tmp_path)
    with client:
        assert engine.info().vocab_size == size + 7 and engine.info().tokenizer_vocab_size == size
        nxt = client.post("/api/next-token", json={"text": PROMPT, "n": size + 7}).json()
        texts = {c["id"]: c["text"] for c in nxt["before"]}
        assert len(texts) == size + 7 and texts[size + 3] == f"<unused {size + 3}>"
        bad = client.post("/api/detokenize", json={"ids": [5, size + 3]})
        expect_http_error(bad, 422, f"^The id {size + 3} is a row of this model")
        assert engine.decode([5, size + 3]) == engine.tokenizer.decode([5]) and engine.token_bytes(size + 3) == b""
        assert client.get("/inference", params={"prompt": PROMPT, "steps": f"h5.h{size + 3}"}).status_code == 200
        assert f"({size:,} used by its tokenizer)" in client.get("/").text
