"""Every page and endpoint on a Llama-family model: tiny random checkpoints saved by transformers
(tests/llama_fixtures.py), each with its own tokenizer.json, loaded into an Engine as the server loads any model.

The figures are checked against the reference libraries: token ids against Hugging Face `tokenizers`, the
logit lens, the scores and greedy generation against transformers' own model read from the same files.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import tokenizers
import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.engine import Engine
from app.main import create_app
from llama_fixtures import save_reference
from model import analysis

TEXT = "Once upon a time, the cat sat on the mat.\n\tHéllo wörld ☃ 12345 🙂 <b>done</b>"
PROMPT = "Once upon a time"
PAGES = ("/", "/data", "/tokenizer", "/loss", "/internals", "/inference", "/playground")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """variant -> (checkpoint directory, transformers' model read from it)."""
    root = tmp_path_factory.mktemp("llama-pages")
    out = {}
    for variant in ("llama", "llama-untied", "mistral"):
        directory = root / f"tiny-{variant}"
        out[variant] = (directory, save_reference(variant, directory))
    return out


def serve(directory: Path) -> tuple[Engine, TestClient]:
    engine = Engine.load(Settings(model=str(directory), max_new_tokens=40))
    return engine, TestClient(create_app(engine.settings, engine))


@pytest.fixture(scope="module")
def served(checkpoints: dict) -> Iterator[dict]:
    """variant -> (engine, client), every app started once."""
    out = {variant: serve(directory) for variant, (directory, _) in checkpoints.items()}
    for _, client in out.values():
        client.__enter__()
    yield out
    for _, client in out.values():
        client.__exit__(None, None, None)


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


def chip_ids(body: str) -> list[int]:
    return [int(i) for i in re.findall(r'<span class="tid">(\d+)</span>', body)]


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


# ---- every page ----

@pytest.mark.parametrize("variant", ["llama", "llama-untied", "mistral"])
def test_every_page_renders(served: dict, variant: str) -> None:
    engine, client = served[variant]
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[-500:])
        assert engine.info().name in r.text
    internals = client.get("/internals").text
    lens = re.search(r'<table id="int-lens".*?</table>', internals, re.S).group(0)
    # the forward pass rendered, not a message in its place: the embeddings, then each block
    assert lens.count('<tr><th scope="row">') == engine.config.n_layer + 1


# ---- tokenizer page ----

@pytest.mark.parametrize("variant", ["llama", "llama-untied", "mistral"])
def test_chips_are_the_checkpoints_own_tokens(served: dict, checkpoints: dict, variant: str) -> None:
    _, client = served[variant]
    want = hf_tokenizer(checkpoints, variant).encode(TEXT, add_special_tokens=False).ids
    body = client.post("/partials/tokens", data={"text": TEXT}).text
    assert chip_ids(body) == want
    assert f'data-count="tokens">{len(want)}<' in body
    api = client.post("/api/tokenize", json={"text": TEXT}).json()
    assert [t["id"] for t in api["tokens"]] == want
    spans = [(t["start"], t["end"]) for t in api["tokens"]]
    assert spans[0][0] == 0 and spans[-1][1] == len(TEXT)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # the spans tile the text
    assert b"".join(bytes(t["bytes"]) for t in api["tokens"]).decode("utf-8").strip() == TEXT.strip()
    assert "&lt;" in body and "<b>" not in body  # token text is escaped


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


def test_comparison_has_the_models_own_column(client: TestClient, checkpoints: dict, engine: Engine) -> None:
    want = hf_tokenizer(checkpoints).encode(TEXT, add_special_tokens=False).ids
    body = client.post("/partials/compare", data={"text": TEXT}).text
    sections = re.findall(r"<section (.*?)</section>", body, re.S)
    assert len(sections) == 4 and "data-own" in sections[0] and "this model&#39;s own" in sections[0]
    assert chip_ids(sections[0]) == want
    assert f'data-count="model">{len(want)} tokens<' in body
    assert f"vocabulary of {engine.tokenizer.vocab_size}" in sections[0]
    for name in ("gpt2", "cl100k_base", "o200k_base"):
        assert re.search(rf'data-count="{name}">\d+ tokens<', body)
    csv = client.get("/download/compare.csv", params={"text": TEXT}).text.splitlines()
    mine = [int(line.split(",")[2]) for line in csv[1:] if line.startswith(engine.info().name + ",")]
    assert mine == want


def test_comparison_keeps_three_columns_for_gpt2(tiny_checkpoint: Path) -> None:
    engine, client = serve(tiny_checkpoint)
    with client:
        body = client.post("/partials/compare", data={"text": TEXT}).text
    assert body.count("<section ") == 3 and "data-own" not in body and engine.own_tokenizer is None


def test_bpe_replay_ends_at_the_tokenizers_own_ids(client: TestClient, checkpoints: dict) -> None:
    text = "the cat sat on the mat, naïve apples 2024"
    want = hf_tokenizer(checkpoints).encode(text, add_special_tokens=False).ids
    r = client.post("/api/bpe", json={"text": text}).json()
    assert r["tokens"] == want and r["steps"]
    words = [list(w) for w in r["initial"]]
    text_of = {p["id"]: p["text"] for p in r["pieces"]}
    for step in r["steps"]:
        assert text_of[step["token_id"]] == step["merged"]
        for change in step["changes"]:
            words[change["pretoken"]] = change["symbols"]
    assert [i for w in words for i in w] == want
    body = client.post("/partials/bpe", data={"text": text}).text
    assert 'data-bpe-unit="bytes"' in body and 'data-bpe-rank="list"' in body
    data = json.loads(html.unescape(re.search(r'<script type="application/json" id="bpe-data">(.*?)</script>',
                                              body, re.S).group(1)))
    assert data["tokens"] == want


def test_vocabulary_browser_searches_the_models_vocabulary(client: TestClient, checkpoints: dict) -> None:
    ref = hf_tokenizer(checkpoints)
    want = sorted(i for i in range(ref.get_vocab_size()) if "cat" in ref.decode([i]))
    page = client.get("/api/vocab", params={"q": "cat", "limit": 100}).json()
    assert [e["id"] for e in page["items"]] == want and page["total"] == len(want)
    body = client.get("/partials/vocab", params={"q": "cat"}).text
    assert re.findall(r'<span class="vid">(\d+)</span>', body) == [str(i) for i in want]
    by_id = client.get("/api/vocab", params={"q": "300"}).json()["items"][0]
    assert by_id["id"] == 300 and by_id["text"] == ref.decode([300])


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
    r = client.post("/playground/generate", json={"prompt": PROMPT, "max_new_tokens": 6, "temperature": 0})
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
    assert bad.status_code == 422 and bad.json()["message"] == \
        "The id 401 is not a token of this model: use ids from 0 to 400."
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
        assert bad.status_code == 422 and bad.json()["message"].startswith(f"The id {size + 3} is a row of this model")
        assert engine.decode([5, size + 3]) == engine.tokenizer.decode([5]) and engine.token_bytes(size + 3) == b""
        assert client.get("/inference", params={"prompt": PROMPT, "steps": f"h5.h{size + 3}"}).status_code == 200
        assert f"({size:,} used by its tokenizer)" in client.get("/").text
