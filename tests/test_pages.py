"""The HTML pages and htmx partials, through TestClient against a tiny random model.

The checkpoint gets a training log and a model card, as the shipped model has,
so the data page shows its curve; one test takes them away again.

The walks every model must pass run on both architectures: this GPT-2 and the small Llama-family
models of tests/llama_fixtures.py, each checked against its own reference tokenizer (tiktoken's
BPE for GPT-2, Hugging Face `tokenizers` for the checkpoint's tokenizer.json). What only a Llama
model has is in test_llama_pages.py.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tokenizers
from fastapi.testclient import TestClient

from app.config import Settings
from app.views.copying import CopyingFacts
from app.serving.engine import Engine
from app.main import create_app
from app import templating, demo
from app.pages import data as data_page, internals, tokenizer as tokenizer_page
from model.probes import incontext
from model.tokenizers.tokenizer import gpt2_tokenizer

MAX_CHARS = 5000
TEXT = "Once upon a time, the cat sat on the mat.\n\tHéllo wörld ☃ 12345 🙂 <b>done</b>"
ARCHS = ["gpt2", "llama"]  # the architectures every page walk runs on
VARIANTS = ["gpt2", "llama", "llama-untied", "mistral"]  # and the Llama-family variants, for the widest walks

LOG = [
    {"step": 100, "tokens": 409600, "train_loss": 7.9, "val_loss": 8.0,
     "val_losses": {"tinystories": 8.0, "tales": 8.4}, "lr": 1e-3, "elapsed_s": 300.0,
     "samples": {"Once upon a time": "Once upon a time the the <b>the</b>"}},
    {"step": 200, "tokens": 819200, "train_loss": 4.1, "val_loss": 4.3,
     "val_losses": {"tinystories": 4.3, "tales": 5.0}, "lr": 1e-3, "elapsed_s": 600.0},
    {"step": 250, "tokens": 1024000, "lr": 1e-3, "samples": {"Once upon a time": "Once upon a time there was a cat."}},
    {"step": 300, "tokens": "many", "val_loss": None, "samples": "not a dict"},  # a damaged line is skipped
]
CARD = {"name": "deepdive-test", "description": "A tiny test model.",
        "corpus": {"tinystories": {"weight": 3, "train_documents": 1000, "val_documents": 10,
                                   "train_characters": 800000, "train_tokens": 200000, "val_tokens": 2000},
                   "tales": {"weight": 1, "train_documents": 5, "val_documents": 1,
                             "train_characters": 90000, "train_tokens": 22000, "val_tokens": 900}}}


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pages") / "deepdive-test"
    shutil.copytree(tiny_checkpoint, path)
    (path / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LOG) + "not json\n")
    (path / "model_card.json").write_text(json.dumps(CARD))
    return path


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> Engine:
    return Engine.load(Settings(model=str(checkpoint), max_text_chars=MAX_CHARS))


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine.settings, engine)) as c:
        yield c


@dataclass
class Served:
    """A model's app, and the reference tokenizer its ids must equal."""
    name: str
    engine: Engine
    client: TestClient
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]


@pytest.fixture
def arch(request: pytest.FixtureRequest) -> Served:
    """The app on the architecture the test is parametrized with (indirect), each started once."""
    if request.param == "gpt2":
        ref = gpt2_tokenizer().encoding  # tiktoken's own BPE
        return Served("gpt2", request.getfixturevalue("engine"), request.getfixturevalue("client"), ref.encode_ordinary,
                      ref.decode)
    directory, _ = request.getfixturevalue("llama_checkpoints")[request.param]
    engine, client = request.getfixturevalue("llama_served")[request.param]
    hf = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    return Served(request.param, engine, client, lambda text: hf.encode(text, add_special_tokens=False).ids, hf.decode)


def on(archs: list[str]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("arch", archs, indirect=True)


def post(client: TestClient, path: str, text: str) -> str:
    r = client.post(path, data={"text": text})
    assert r.status_code == 200, r.text
    return r.text


def chip_ids(body: str) -> list[int]:
    return [int(i) for i in re.findall(r'<span class="tid">(\d+)</span>', body)]


# ---------------------------------------------------------------- every page

PAGES = [
    ("/", "one token at a time", "/data"),
    ("/data", "joined into one long stream of tokens", "/tokenizer"),
    ("/tokenizer", "A model never sees letters", "/loss"),
    ("/loss", "classification over the whole vocabulary", "/internals"),
]


ALL_PAGES = ("/", "/data", "/tokenizer", "/loss", "/internals", "/inference", "/playground")


@on(VARIANTS)
def test_every_page_renders(arch: Served) -> None:
    for path in ALL_PAGES:
        r = arch.client.get(path)
        assert r.status_code == 200, (path, r.text[-500:])
        assert arch.engine.info().name in r.text
    internals = arch.client.get("/internals").text
    lens = re.search(r'<svg id="int-lens".*?</svg>', internals, re.S).group(0)
    # the forward pass rendered, not a message in its place: the embeddings, then each block
    assert lens.count('role="rowheader"') == arch.engine.config.n_layer + 1


@on(ARCHS)
@pytest.mark.parametrize("path,explanation,next_path", PAGES)
def test_page_explains_and_links_on(arch: Served, path: str, explanation: str, next_path: str):
    r = arch.client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    body = r.text
    assert explanation in body
    assert re.search(rf'<a href="{re.escape(next_path)}" rel="next">Next stage: \w+ →</a>', body)
    # the nav lists every stage in order and marks this one
    labels = re.findall(r'<li><a href="[^"]*"(?: aria-current="page")?><span class="stage-label">([^<]+)</span></a></li>', body)
    assert labels == [s.label for s in templating.STAGES]
    assert re.search(rf'<a href="{re.escape(path)}" aria-current="page">', body)


@on(ARCHS)
@pytest.mark.parametrize("path", [p for p, _, _ in PAGES])
def test_page_has_no_inline_script_or_handler(arch: Served, path: str):
    """The Content-Security-Policy forbids both: scripts come from /static, data from JSON blocks."""
    body = arch.client.get(path).text
    for tag in re.findall(r"<script\b[^>]*>", body):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+\s*=", body)
    assert "style=" not in body  # bars are SVG with width attributes, so even style-src 'self' holds
    assert 'name="htmx-config"' in body and '"includeIndicatorStyles":false' in body


def test_presentation_mode_from_url(client: TestClient):
    assert '<html lang="en" class="present">' in client.get("/?present=1").text
    assert '<html lang="en">' in client.get("/").text


def test_overview_shows_the_model(client: TestClient, engine: Engine):
    body = client.get("/").text
    info = engine.info()
    assert f"{info.parameters['total']:,}" in body
    assert "A tiny test model." in body
    for href in ("/tokenizer", "/internals", "/inference", "/playground", "/data", "/loss"):
        assert f'<a href="{href}"><strong>' in body


# ---------------------------------------------------------------- tokenizer

@on(VARIANTS)
def test_chips_are_the_models_own_tokens(arch: Served) -> None:
    want = arch.encode(TEXT)
    body = post(arch.client, "/partials/tokens", TEXT)
    assert chip_ids(body) == want
    assert f'data-count="tokens">{len(want)}<' in body
    api = arch.client.post("/api/tokenize", json={"text": TEXT}).json()
    assert [t["id"] for t in api["tokens"]] == want
    spans = [(t["start"], t["end"]) for t in api["tokens"]]
    assert spans[0][0] == 0 and spans[-1][1] == len(TEXT)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # the spans tile the text
    assert b"".join(bytes(t["bytes"]) for t in api["tokens"]).decode("utf-8").strip() == TEXT.strip()
    assert "&lt;" in body and "<b>" not in body  # token text is escaped


def test_tokens_partial_counts_and_ids(client: TestClient):
    body = post(client, "/partials/tokens", "Hello world")
    assert chip_ids(body) == [15496, 995]
    assert 'data-count="tokens">2<' in body
    assert 'data-count="characters">11<' in body
    assert 'data-count="bytes">11<' in body
    assert 'data-count="characters-per-token">5.50<' in body
    assert 'title="token 2 of 2 · id 995 · bytes 20 77 6f 72 6c 64 · characters 6–11"' in body


def test_tokens_partial_escapes_html(client: TestClient):
    body = post(client, "/partials/tokens", "<script>alert(1)</script>")
    assert "<script>" not in body and "</script>" not in body
    assert '>&lt;<span class="tid">' in body  # the chip "<", escaped
    stream = body.split('class="tokens"')[1].split('id="tok-detail"')[0]
    shown = html.unescape(re.sub(r'<span class="tid">\d+</span>|<[^>]+>', "", stream))
    assert "<script>alert(1)</script>" in shown


def test_tokens_partial_marks_whitespace_and_partial_bytes(client: TestClient):
    body = post(client, "/partials/tokens", "a b\n\tc🙂")
    assert '<span class="ws ws-sp"><span class="ws-raw"> </span><span class="ws-mark" aria-hidden="true">·</span></span>' in body
    # a closing newline: its mark (and id) in the chip, the newline itself just after it, so the chip stays whole
    assert re.search(r'<span class="ws-mark" aria-hidden="true">↵</span></span><span class="tid">\d+</span></span>'
                     r'<span class="ws-raw">\n</span>', body)
    assert '<span class="ws-mark" aria-hidden="true">→</span>' in body
    assert "partial" in body and r"\xf0\x9f" in body  # the emoji's first bytes, as bytes


@pytest.mark.parametrize("text,kind,words", [
    ("", "message", "Type or paste some text"),
    ("x" * (MAX_CHARS + 1), "message error", "the limit is 5,000"),
])
def test_tokens_partial_bad_input_is_a_friendly_message(client: TestClient, text: str, kind: str, words: str):
    body = post(client, "/partials/tokens", text)
    assert f'<p class="{kind}"' in body and words in body


def test_tokenizer_page_state_from_url(client: TestClient):
    body = client.get("/tokenizer", params={"text": "Hi <b>there</b>", "ids": "1", "ws": "0", "q": "cat"}).text
    assert 'id="tokenizer-views" class="show-ids"' in body
    assert "Hi &lt;b&gt;there&lt;/b&gt;</textarea>" in body
    assert 'name="q" value="cat"' in body
    assert "<b>there" not in body


def story_ids(body: str) -> list[int]:
    """The token ids the merge story's chips show, in order."""
    return [int(i) for i in re.findall(r'title="id (\d+)', body)]


def test_bpe_partial_escapes_the_text(client: TestClient, engine: Engine):
    text = "lower </script><b>"
    body = post(client, "/partials/bpe", text)
    assert "<b>" not in body and "</script>" not in body and "&gt;</span>" in body
    start = int(re.search(r'max="(\d+)"', body).group(1))
    assert start > 0 and "Start: </strong>18 bytes, one token each, in 6 pieces" in body
    last = client.post("/partials/bpe", data={"text": text, "move": "last"}).text
    assert story_ids(last) == engine.tokenizer.encode(text)


@on(ARCHS)
def test_bpe_replay_ends_at_the_tokenizers_own_ids(arch: Served) -> None:
    text = "the cat sat on the mat, naïve apples 2024"
    want = arch.encode(text)
    r = arch.client.post("/api/bpe", json={"text": text}).json()
    assert r["tokens"] == want and r["steps"]
    words = [list(w) for w in r["initial"]]
    text_of = {p["id"]: p["text"] for p in r["pieces"]}
    for step in r["steps"]:
        assert text_of[step["token_id"]] == step["merged"]
        for change in step["changes"]:
            words[change["pretoken"]] = change["symbols"]
    assert [i for w in words for i in w] == want
    # the page's story starts from the bytes and, step by step, ends at the same ids
    body = post(arch.client, "/partials/bpe", text)
    assert story_ids(body) == [i for w in r["initial"] for i in w]
    last = arch.client.post("/partials/bpe", data={"text": text, "move": "last"}).text
    assert story_ids(last) == want and f"Done: {len(want)} tokens" in last
    # a merge's rank: GPT-2's is its token id; a tokenizer.json's, its place in the merges list
    middle = arch.client.post("/partials/bpe", data={"text": text, "bpe": "1"}).text
    said = "Lower ids were learned earlier" if arch.name == "gpt2" else "Merges learned earlier apply first"
    assert said in middle and "Step 1 of" in middle


def test_bpe_partial_covers_a_prefix_of_long_text(client: TestClient, engine: Engine):
    body = client.post("/partials/bpe", data={"text": "word " * 100, "move": "last"}).text
    assert f"first {tokenizer_page.BPE_CHARS} characters" in body
    assert story_ids(body) == engine.tokenizer.encode(("word " * 100)[: tokenizer_page.BPE_CHARS])


def test_each_control_leads_to_its_step(client: TestClient):
    def at(**form: str) -> tuple[int, bool]:
        body = client.post("/partials/bpe", data={"text": "lower lowest", **form}).text
        step = int(re.search(r'id="bpe-slider"[^>]*value="(\d+)"', body).group(1))
        return step, 'hx-trigger="load delay:700ms"' in body

    last, _ = at(move="last")
    assert last > 3
    assert at() == (0, False) and at(bpe="2") == (2, False)
    assert at(bpe="2", move="step") == (3, False) and at(bpe="2", move="back") == (1, False)
    assert at(bpe="0", move="back") == (0, False) and at(bpe="2", move="first") == (0, False)
    assert at(bpe="500") == (last, False)  # past the last merge: the end of the story
    # Play stays where it is and asks for the next step; its ticks go on until the last merge
    assert at(bpe="2", move="play") == (2, True) and at(bpe="2", move="tick") == (3, True)
    assert at(bpe=str(last - 1), move="tick") == (last, False) and at(bpe="2", move="pause") == (2, False)
    assert at(bpe=str(last), move="play") == (0, True)  # from the end, Play starts again
    assert client.post("/partials/bpe", data={"text": "lower", "move": "jump"}).status_code == 422


def test_a_links_bpe_step_opens_the_story_there(client: TestClient):
    page = client.get("/tokenizer", params={"text": "lower lowest", "bpe": "2"}).text
    assert "<strong>Step 2 of" in page and 'data-url-value="2"' in page
    assert "<strong>Start: " in client.get("/tokenizer", params={"text": "lower lowest", "bpe": "x"}).text
    assert "watch its bytes merge" in client.get("/tokenizer", params={"text": ""}).text


def test_bpe_partial_empty(client: TestClient):
    assert "watch its bytes merge" in post(client, "/partials/bpe", "")


@on(ARCHS)
def test_comparison_shows_three_vocabularies_and_the_models_own(arch: Served) -> None:
    engine = arch.engine
    body = post(arch.client, "/partials/compare", TEXT)
    for name, size in (("GPT-2", "50,257"), ("cl100k_base", "100,277"), ("o200k_base", "200,019")):
        assert name in body and f"vocabulary of {size}" in body
    for name in ("gpt2", "cl100k_base", "o200k_base"):
        assert re.search(rf'data-count="{name}">\d+ tokens<', body)
    assert "<b>" not in body and "&lt;" in body
    sections = re.findall(r"<section (.*?)</section>", body, re.S)
    assert (engine.own_tokenizer is None) == (arch.name == "gpt2")
    if engine.own_tokenizer is None:  # GPT-2's vocabulary is already the first of the three
        assert len(sections) == 3 and "data-own" not in body
        return
    want = arch.encode(TEXT)
    assert len(sections) == 4 and "data-own" in sections[0] and "this model&#39;s own" in sections[0]
    assert chip_ids(sections[0]) == want
    assert f'data-count="model">{len(want)} tokens<' in body
    assert f"vocabulary of {engine.tokenizer.vocab_size}" in sections[0]
    csv = arch.client.get("/download/compare.csv", params={"text": TEXT}).text.splitlines()
    mine = [int(line.split(",")[2]) for line in csv[1:] if line.startswith(engine.info().name + ",")]
    assert mine == want


@on(ARCHS)
def test_vocabulary_browser_searches_the_models_vocabulary(arch: Served) -> None:
    size = arch.engine.tokenizer.vocab_size
    want = sorted(i for i in range(size) if "cat" in arch.decode([i]))
    page = arch.client.get("/api/vocab", params={"q": "cat", "limit": 100}).json()
    assert [e["id"] for e in page["items"]] == want[:100] and page["total"] == len(want)
    body = arch.client.get("/partials/vocab", params={"q": "cat"}).text
    assert re.findall(r'<span class="vid">(\d+)</span>', body) == [str(i) for i in want[:tokenizer_page.VOCAB_PAGE]]
    by_id = arch.client.get("/api/vocab", params={"q": "300"}).json()["items"][0]
    assert by_id["id"] == 300 and by_id["text"] == arch.decode([300])


def test_vocab_search_finds_the(client: TestClient):
    body = client.get("/partials/vocab", params={"q": " the"}).text
    assert '<span class="vid">262</span>' in body
    assert 'data-url-param="vpage" data-url-value="1"' in body


def test_vocab_by_id_and_paging(client: TestClient):
    body = client.get("/partials/vocab", params={"q": "50256"}).text
    assert '<span class="vid">50256</span>' in body and "&lt;|endoftext|&gt;" in body
    everything = client.get("/partials/vocab", params={"q": "", "page": 2}).text
    first_id = int(re.search(r'<span class="vid">(\d+)</span>', everything).group(1))
    assert first_id == tokenizer_page.VOCAB_PAGE
    past_end = client.get("/partials/vocab", params={"q": "", "page": 99999}).text
    last = -(-50257 // tokenizer_page.VOCAB_PAGE)
    assert f"page {last:,} of {last:,}" in past_end


def test_vocab_search_without_match_or_too_long(client: TestClient):
    assert "No token contains" in client.get("/partials/vocab", params={"q": "zzqqxxjj<i>"}).text
    assert "&lt;i&gt;" in client.get("/partials/vocab", params={"q": "zzqqxxjj<i>"}).text
    assert "at most 100 characters" in client.get("/partials/vocab", params={"q": "x" * 101}).text


# ---------------------------------------------------------------- loss

def test_loss_partial_colours_every_token(client: TestClient, engine: Engine):
    body = post(client, "/partials/loss", "Once upon a time <i>")
    chips = re.findall(r'<span class="chip c\d (loss-\d)" tabindex="-?\d" title="p = [^"]+ · loss ([\d.]+) nats', body)
    assert len(chips) == len(engine.tokenizer.encode("Once upon a time <i>"))
    for cls, loss in chips:
        assert cls == templating.loss_class(float(loss))
    assert re.search(r'data-stat="mean-loss">\d+\.\d\d<', body)
    assert re.search(r'data-stat="perplexity">[\d.]+<', body)
    assert "&lt;" in body and "<i>" not in body


def test_loss_partial_long_text_is_truncated_to_the_context(client: TestClient, engine: Engine):
    body = post(client, "/partials/loss", "one two three " * 40)
    room = engine.info().n_ctx - 1
    assert f"only the first {room} of your" in body
    assert len(re.findall(r'title="p = ', body)) == room


@pytest.mark.parametrize("text,words", [("", "Type or paste some text"), ("   ", "Type or paste some text"),
                                        ("x" * (MAX_CHARS + 1), "the limit is 5,000")])
def test_loss_partial_bad_input(client: TestClient, text: str, words: str):
    assert words in post(client, "/partials/loss", text)


def test_loss_bins():
    assert [templating.loss_class(x) for x in (0.1, 1.0, 2.0, 4.0, 6.0, 9.0)] == [f"loss-{i}" for i in range(6)]


# ---------------------------------------------------------------- data

def test_data_page_stream_curve_and_samples(client: TestClient):
    body = client.get("/data").text
    eots = re.findall(r'<span class="chip c\d eot"[^>]*>&lt;\|endoftext\|&gt;<span class="tid">50256</span></span>', body)
    assert len(eots) >= 1
    assert len(re.findall(r'<span class="chip c\d', body)) == data_page.DATA_TOKENS
    legend = re.findall(r'<li><span class="swatch k-[\w-]+"></span>(.*?)</li>', body)
    assert legend == ["training loss", "validation loss (held-out stories)", "validation loss (tales)"]
    # the server draws the curve: a polyline per series, a point per logged evaluation that has the series
    chart = re.search(r'<svg id="curve-chart".*?</svg>', body, re.S).group(0)
    lines = dict(re.findall(r'<polyline class="series ([\w -]+)" points="([^"]*)"', chart))
    assert list(lines) == ["s-train", "s-val", "s-extra s-extra-1"]
    points = {k: [tuple(map(float, p.split(","))) for p in v.split()] for k, v in lines.items()}
    assert all(len(p) == 2 for p in points.values())  # steps 100 and 200; the others logged no loss
    (x0, train0), (x1, train1) = points["s-train"]
    assert x0 < x1 and train0 < train1  # later is right; the loss fell from 7.9 to 4.1, so the line goes down
    assert points["s-val"][0][0] == x0 and points["s-extra s-extra-1"][1][1] < train1  # tales 5.0 above 4.1
    # the readout names every series at an x: the last one at first, each column's in its data-say
    says = re.findall(r'data-say="([^"]*)"', chart)
    assert len(says) == 2 and says[0].startswith("After 410 k tokens seen: training loss 7.900 · ")
    assert "After 819 k tokens seen: training loss 4.100 · validation loss (held-out stories) 4.300 · " \
        "validation loss (tales) 5.000" in re.search(r'id="curve-readout"[^>]*>(.*?)</p>', body, re.S).group(1)
    assert "After 250 steps" in body and "there was a cat." in body
    assert "&lt;b&gt;the&lt;/b&gt;" in body  # samples are escaped
    assert "75%" in body and "200,000" in body  # corpus from the model card


def test_data_page_counts_the_committed_samples(client: TestClient, engine: Engine):
    body = client.get("/data").text
    from model.training.corpus import documents
    docs = documents(data_page.SAMPLES / "wizard_of_oz_excerpt.txt")
    tokens = sum(len(engine.tokenizer.encode(d)) + 1 for d in docs)
    assert f"<td class=\"r\">{tokens:,}</td>" in body


def test_data_page_without_log_says_so(client: TestClient, engine: Engine, tiny_checkpoint: Path,
                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(engine.loaded, "path", tiny_checkpoint)
    monkeypatch.setattr(engine.loaded, "card", None)
    body = client.get("/data").text
    assert "came without a training log" in body
    assert "curve-chart" not in body
    assert "no model card" in body


# ---------------------------------------------------------------- helpers

def test_ws_segments_and_pct():
    assert templating.ws_segments("a  b\n\n\tc") == [("text", "a"), ("sp", "  "), ("text", "b"), ("nl", "\n\n"),
                                                  ("tab", "\t"), ("text", "c")]
    assert templating.pct(0.5) == "50.0%" and templating.pct(0.999) == "100%"
    assert templating.pct(0.0123) == "1.23%" and templating.pct(1e-5) == "0.001% (1 in 100,000)"
    assert templating.si(6_963_200) == "6.96 M" and templating.si(512) == "512"


# ---------------------------------------------------------------- in-context copying on the pages

def test_loss_partial_points_out_a_repeated_stretch(client: TestClient, engine: Engine):
    text = dict(demo.LOSS_EXAMPLES)["random words, twice"]
    first, second = text.split("\n")
    assert first == second
    body = post(client, "/partials/loss", text)
    m = re.search(r"(\d+) tokens repeat a stretch that came earlier in this text\. The first\s+time they cost "
                  r"([\d.]+) nats each on average; this time\s+([\d.]+)", body)
    assert m, body
    # every word of the second line after its first repeats a pair seen on the first line
    assert int(m.group(1)) == len(engine.tokenizer.encode(second)) - 1
    assert "data-repeats" not in post(client, "/partials/loss", "Once upon a time there was a cat.")


def test_head_finder_ranks_every_head_on_the_probe_and_the_prompt(client: TestClient, engine: Engine):
    info = engine.info()
    body = client.post("/partials/heads", data={"on": "probe", "sort": "previous_token"}).text
    rows = re.findall(r'data-layer="(\d+)" data-head="(\d+)"', body)
    assert len(rows) == min(internals.HEAD_ROWS, info.n_layer * info.n_head)
    scores = [float(x) for x in re.findall(r'<td class="r(?: strong)?">([\d.]+)</td>', body)][1::3]
    assert scores == sorted(scores, reverse=True)  # ranked by the previous-token column
    probe = incontext.probe_words(info.n_ctx // 2 - 1)
    assert 'data-probe-text="' + html.escape(probe) + '"' in body
    body = client.post("/partials/heads", data={"on": "prompt", "prompt": "the cat sat. the cat sat."}).text
    assert 'data-probe-text=""' in body and "the prompt above" in body
    assert "at least two tokens" in client.post("/partials/heads", data={"on": "prompt", "prompt": "a"}).text
    assert "Type a prompt" in client.post("/partials/heads", data={"on": "prompt", "prompt": " "}).text
    too_long = client.post("/partials/heads", data={"on": "prompt", "prompt": "cat " * 300}).text
    assert "reads at most" in too_long


def test_internals_hint_claims_only_measured_heads(client: TestClient, engine: Engine):
    body = client.get("/internals").text
    hint = re.search(r"different habits\. (In this model, [^<]+)", body).group(1)
    # a random model has no head that does either job, and the hint says so with the best scores
    assert "no head clearly looks at the previous token" in hint
    assert "no head clearly looks back at what followed" in hint
    rows = internals.head_hint(CopyingFacts(None, [
        {"layer": 2, "head": 5, "previous_token": 0.91, "induction": 0.1, "first_token": 0},
        {"layer": 3, "head": 1, "previous_token": 0.1, "induction": 0.62, "first_token": 0}], 17_000_000))
    assert "block 2, head 5 looks at the previous token: 91%" in rows
    assert "block 3, head 1 looks back at what followed the current token last time (an induction head): 62%" in rows


def test_playground_labels_presets_the_model_cannot_do(client: TestClient):
    body = client.get("/playground").text
    for p in demo.PLAYGROUND_PRESETS:
        label = html.escape(p["label"])
        needs = re.search(re.escape(label) + r'(?: <span class="muted">\(([^)]*)\)</span>)?</button>', body)
        assert needs, p["label"]
        # a tiny random model without a measured card: it neither knows the world nor reads its prompt
        assert needs.group(1) == {"large": "needs a larger model", "copying": "needs a model that reads its prompt",
                                  None: None}[p.get("needs")], p["label"]
        if p.get("needs"):
            assert p.get("note")  # says what a model that can does with it


def test_what_a_preset_needs_follows_the_card():
    from model.model_card import Copying
    reads = Copying(first_copy=10, second_copy=0.5, name_first_use=11, name_later_uses=1.2)
    does_not = Copying(first_copy=10, second_copy=9.5, name_first_use=11, name_later_uses=9.8)
    name = next(p for p in demo.PLAYGROUND_PRESETS if p["key"] == "name")
    french = next(p for p in demo.PLAYGROUND_PRESETS if p["key"] == "french")
    assert demo.lacking(name, reads, 17_000_000) is None
    assert demo.lacking(name, does_not, 17_000_000) == "needs a model that reads its prompt"
    assert demo.lacking(name, None, 124_000_000) is None  # GPT-2 and up copy; no card needed
    assert demo.lacking(french, reads, 17_000_000) == "needs a larger model"
    assert demo.lacking(french, None, 124_000_000) is None


def test_data_page_marks_the_stages_and_says_what_its_figures_are(client: TestClient, engine: Engine,
                                                                   monkeypatch: pytest.MonkeyPatch):
    from model.model_card import ModelCard, Source, Stage
    card = ModelCard(validation_loss=2.72, training_tokens=1_024_000,
                     corpus=(Source("tinystories", weight=3, train_tokens=200_000),),
                     stages=(Stage(100), Stage(150)))
    monkeypatch.setattr(engine.loaded, "card", card)
    body = client.get("/data").text
    marks = re.findall(r'<g class="mark ([\w ]*)"><line x1="([\d.]+)"[^>]*/>\s*<text[^>]*>(.*?)</text>', body)
    assert marks == [("stage", "423.0", "stage 2")]  # at 409,600 of 819,200 tokens: halfway along the x axis
    assert "Training ran in 2 stages" in body
    assert "The first measurement,\n    after 100 steps, is 8.00; the last, after\n    200 steps, is 4.30" in body
    assert "(2.72)" in body and "on the whole held-out file" in body
    assert ">5.1</td>" in body  # 1,024,000 tokens read, all from 200,000: each read about 5.1 times


@pytest.mark.parametrize("later,can", [(0.8, True), (9.5, False)])
def test_overview_says_what_the_card_measured_about_copying(client: TestClient, engine: Engine,
                                                            monkeypatch: pytest.MonkeyPatch, later: float, can: bool):
    from model.model_card import Copying, ModelCard
    card = ModelCard(copying=Copying(first_copy=10.4, second_copy=0.6, name_first_use=11.2, name_later_uses=later))
    monkeypatch.setattr(engine.loaded, "card", card)
    body = client.get("/").text
    can_list, cannot_list = body.split("<h3>It cannot</h3>")
    # each figure sits in the list it supports, naming the probe it comes from
    assert "random words said a second time cost it\n    0.6 nats per token, against 10.4" in can_list
    name = f"reuse a made-up name it has just read: it costs {later} nats per token"
    assert name in (can_list if can else cannot_list) and "probe of invented names" in body
    assert "that takes a larger model" in body  # a small model: few-shot tasks are beyond it either way
    playground = client.get("/playground").text
    assert ("It does learn from its prompt what it can copy" in playground) == can


def test_the_curve_marks_phases_and_says_why_a_new_mix_jumps():
    from app.pages.data import curve_spec, phase_starts, stage_starts
    from model.model_card import Stage
    evals = [{"step": s, "tokens": s * 10, "train_loss": 3.0, "val_loss": 3.0} for s in (100, 200, 300)]
    assert phase_starts(evals) == []  # today's log: no phases, no mark
    phased = [{**r, "phase": p} for r, p in zip(evals, "AAB")]
    # at the last x, the right edge: its label reads leftwards from its line
    marks = curve_spec(phased, [])["chart"]["marks"]
    assert [(m["label"], m["x"], m["anchor"]) for m in marks] == [("phase B", 782.0, "end")]
    stages = (Stage(100, {"a": 1.0}), Stage(100, {"a": 0.5, "b": 0.5}), Stage(100, {"a": 0.5, "b": 0.5}))
    # without a natural-text loss to plot, the label says why the training loss jumps where the mix changed
    assert [m["label"] for m in stage_starts(evals, stages)] == ["stage 2: new mix, loss jumps", "stage 3"]
    natural = [{**r, "train_loss_natural": 2.9} for r in evals]
    assert [m["label"] for m in stage_starts(natural, stages)] == ["stage 2", "stage 3"]
    assert "training loss (natural text only)" in [s["label"] for s in curve_spec(natural, [])["series"]]

