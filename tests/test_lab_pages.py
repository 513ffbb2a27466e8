"""The internals, inference and playground pages as HTML: each renders, explains itself, links on,
restores its settings from the URL, escapes what it echoes, and carries no inline script."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app import templating
from app.main import create_app
from app.schemas import answers as an
from app.views import writing

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
    assert re.search(r'<select id="int-pos"[^>]*>.*?<option value="2" selected>', html, re.S)  # the default prompt's
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
    assert re.findall(r'aria-label="temperature [^"]*" data-temperature="([^"]*)"', html) == ["0.0", "0.7", "1.0", "1.5"]
    html = client.get("/playground", params={"seed": "<b>", "stop": "<b>"}).text
    assert 'value=""' in tag(html, "seed")
    assert '<option value="none" selected>' in html


def events_of(body: str) -> list[tuple[str, str]]:
    """A stream's events: each one's name and its data, its lines joined again."""
    return [(m[0], "\n".join(line[6:] for line in m[1].split("\n")))
            for m in re.findall(r"event: (\w+)\n((?:data: .*\n)+)\n", body)]


def test_the_playground_stream_draws_each_token_into_its_column(client: TestClient) -> None:
    ask = {"prompt": "Once upon a time", "max_new_tokens": 6, "temperature": 0, "n_top": 3, "seed": 1}
    api = [(name, json.loads(d)) for name, d in events_of(client.post("/api/generate", json=ask).text)]
    r = client.post("/playground/generate", json=ask | {"out": "pg-t2"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    page = events_of(r.text)
    assert [name for name, _ in page] == [name for name, _ in api] == ["token"] * 6 + ["done"]
    tokens = [d for name, d in api if name == "token"]
    chip = r'<span class="chip c\d (loss-\d)[^"]*" tabindex="(-?\d)" title="([^"]*)">'
    chips = [re.search(chip, d) for _, d in page[:-1]]
    # each chip is coloured by the model's own probability and says its chance, its place and the alternatives
    assert [c[1] for c in chips] == [templating.loss_class(-math.log(t["raw_prob"])) for t in tokens]
    assert [c[2] for c in chips] == ["0"] + ["-1"] * 5  # the column's one tab stop
    assert unescape(chips[0][3]).startswith(f"chance {templating.pct(tokens[0]['prob'])} · the model's own probability")
    assert " · token 1 · the model's most likely: “" in unescape(chips[0][3]) or "the dice chose among" in chips[0][3]
    assert all('hx-swap-oob="beforeend:#pg-t2 .tokens"' in d for _, d in page[:-1])
    assert [re.search(r"\[data-stat=tokens\]\">(\d+)<", d)[1] for _, d in page[:-1]] == ["1", "2", "3", "4", "5", "6"]
    done = api[-1][1]
    assert f">Stopped at the token limit. {done['prompt_tokens']} prompt tokens, 6 written.</p>" in page[-1][1]
    # the column is the page's own: anything else is refused before the model runs
    for out in ("pg-one\"><script>", "main", ""):
        assert client.post("/playground/generate", json=ask | {"out": out}).status_code == 422
    assert client.post("/playground/generate", json=ask).status_code == 422


def test_the_playground_stream_escapes_what_the_model_writes() -> None:
    step = {"id": 1, "piece": "", "prob": 0.5, "raw_prob": 0.25, "entropy": 1.0, "before": [], "after": []}
    events = [an.TokenEvent(step=0, text="<b>hi</b>", **step),
              an.DoneEvent(finish_reason="stop", prompt_tokens=3, completion_tokens=1, text="<i>",
                           timings=an.Timings(first_token_ms=None, total_ms=1, tokens_per_second=1))]

    async def stream():
        for ev in events:
            yield ev

    req = writing.PageRequest(prompt="Human: hi\nAssistant:", out="pg-one")
    body = "".join(anyio.run(lambda: collect(writing.page_events(stream(), req, "<|endoftext|>"))))
    assert "<b>" not in body and "<i>" not in body and "&lt;b&gt;hi&lt;/b&gt;" in body and "&lt;i&gt;" in body
    assert ">Stopped at the stop text. 3 prompt tokens, 1 written.</p>" in body


async def collect(it) -> list[str]:
    return [x async for x in it]


def test_a_stop_before_anything_names_the_speaker() -> None:
    done = an.DoneEvent(finish_reason="stop", prompt_tokens=5, completion_tokens=1, text="",
                        timings=an.Timings(first_token_ms=None, total_ms=1, tokens_per_second=1))
    said = writing.reason(done, "Human: Hi there\nAssistant:", False, "<|endoftext|>")
    assert said == "The model ended the Assistant's line at once: its first token was the stop text. 5 prompt " \
        "tokens, 1 written."
    assert writing.reason(done, "Once upon a time", False, "x").startswith("The model ended the text at once")
    assert writing.reason(done, "Assistant: hi\n", False, "x").startswith("The model ended the text at once")
    eos = done.model_copy(update={"finish_reason": "eos"})
    assert writing.reason(eos, "", True, "<|endoftext|>").startswith("The model chose <|endoftext|>: it thinks")


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


# ---------------------------------------------------------------- the internals page's forward pass (/partials/forward)

def forward(client: TestClient, prompt: str, pos: int | str = -1) -> str:
    r = client.post("/partials/forward", data={"prompt": prompt, "pos": str(pos)})
    assert r.status_code == 200
    return r.text


def element(html: str, tag_name: str, id_: str) -> str:
    m = re.search(rf'<{tag_name} id="{id_}".*?</{tag_name}>', html, re.S)
    assert m, f"no {tag_name}#{id_}"
    return m.group(0)


def lens_rows(html: str) -> list[list[str]]:
    """The logit lens's rows of cells: for each row, the class of each cell."""
    lens = element(html, "svg", "int-lens")
    return [re.findall(r'<g role="cell" class="([^"]*)"', row) for row in lens.split('class="lens-row">')[1:]]


def activations(client: TestClient, text: str) -> dict:
    return client.post("/api/activations", json={"text": text, "logit_lens": 3, "neurons": 5}).json()


def test_forward_partial_draws_the_lens_neurons_and_tokens(client: TestClient) -> None:
    info = client.get("/api/model").json()
    want = activations(client, "The cat sat on the mat")
    n = len(want["tokens"])
    body = forward(client, "The cat sat on the mat")
    lens = element(body, "svg", "int-lens")
    assert 'hx-swap-oob="true"' in lens  # the lens, select and neurons replace the page's own
    assert len(re.findall(r'role="columnheader"', lens)) == 1 + n  # a corner, then a column per token
    rows = lens_rows(body)
    assert len(rows) == info["n_layer"] + 1  # after the embeddings, and after each block
    assert all(len(cells) == n for cells in rows)
    labels = [re.sub(r"<[^>]*>", "", t) for t in re.findall(r'role="rowheader"[^>]*>(.*?)</text>', lens, re.S)]
    assert labels[-1] == "after block 1: the prediction"
    # each cell shaded by the top guess's probability, in tenths
    for state, cells in zip(want["logit_lens"], rows):
        assert [re.search(r"shade-(\d)", c).group(1) for c in cells] == [str(min(9, int(top[0]["prob"] * 10)))
                                                                          for top in state["top"]]
    strip = element(body, "div", "int-tokens")
    assert re.findall(r'data-pos="(\d+)"', strip) == [str(i) for i in range(n)]
    assert 'class="chip c5 current"' in strip  # the last token, by default
    neurons = element(body, "table", "int-neurons")
    assert "<caption>for “ mat” (position 5)</caption>" in neurons
    assert neurons.count("<tr>") == info["n_layer"] and neurons.count('class="neuron-id"') == 5 * info["n_layer"]
    assert re.search(r'class="neuron-bar bar-10"', neurons)  # the strongest: a full bar
    assert element(body, "select", "int-pos").count("<option") == n + 1
    # the norms heatmap: a cell per state and token, each reading out its own number
    norms = element(body, "div", "int-norms")
    assert re.findall(r'<g data-r="(\d+)"', norms) == [str(i) for i in range(info["n_layer"] + 1)]
    rows = [v.split("|") for v in re.findall(r'<g data-r="\d+" data-v="([^"]*)"', norms)]
    assert [len(r) for r in rows] == [n] * len(want["residual_norms"]["labels"])
    assert rows[-1][-1] == f"{want['residual_norms']['norms'][-1][-1]:.2f}"
    assert 'data-say="{c}, {r}: length {v}."' in norms  # the readout names the cell's token and state
    names = json.loads(unescape(re.search(r"data-names='([^']*)'", norms).group(1)))
    assert names == {"r": want["residual_norms"]["labels"], "c": [f"“{t['text']}” (position {i})"
                                                                   for i, t in enumerate(want["tokens"])]}
    # every head of the last block drawn, a lower triangle of cells each, the checked head's shown by heads.css
    attn = element(body, "div", "int-attn")
    maps = re.findall(r'<svg class="lab-map attn-map"[^>]*data-head="(\d+)">(.*?)</svg>', attn, re.S)
    assert [int(h) for h, _ in maps] == list(range(info["n_head"]))
    assert all(sum(len(list(filter(None, v.split("|")))) for v in re.findall(r'data-v="([^"]*)"', m)) == n * (n + 1) // 2
               for _, m in maps)
    assert all(f'<g class="cells" id="int-attn-cells-{h}">' in m for h, m in maps)  # the thumbnails show these
    assert len(re.findall(r'<use href="#int-attn-cells-\d+"/>', body)) == info["n_head"]
    assert 'aria-label="Attention pattern of block 1, head 0"' in attn
    assert len(re.findall(r'<svg class="lab-thumb" data-head', body)) == info["n_head"]
    assert re.search(r'<input type="radio" name="head" value="0" data-default="0" checked>', body)
    assert f'<link rel="stylesheet" href="/internals/heads.css?n={info["n_head"]}">' in client.get("/internals").text
    css = client.get("/internals/heads.css", params={"n": info["n_head"]})
    assert css.headers["content-type"].startswith("text/css")
    assert css.text.count(":checked") == info["n_head"]
    assert '[value="3"]:checked) :is(.attn-map, .attn-csv)[data-head="3"]' in css.text


def test_forward_partial_follows_the_position(client: TestClient) -> None:
    body = forward(client, "The cat sat on the mat", 1)
    assert "<caption>for “ cat” (position 1)</caption>" in body
    assert 'class="chip c1 current"' in body and 'data-url-value="1"' in body
    assert '<option value="1" selected>' in body
    assert all("chosen" in cells[1] and "chosen" not in cells[0] for cells in lens_rows(body))
    for pos in (99, "x"):  # past the end or not a number: the last token, and ?pos= leaves the URL
        body = forward(client, "The cat sat on the mat", pos)
        assert "(position 5)</caption>" in body and 'data-url-value="-1"' in body
        assert '<option value="-1" selected>' in body


def test_forward_partial_marks_the_guesses_that_match_the_next_token(client: TestClient) -> None:
    # build a prompt whose first token is followed by one of the model's top guesses for it
    prompt = None
    for start in ("The", "Once", "cat", "Hello", "A", "dog"):
        first = activations(client, start)
        for state in first["logit_lens"]:
            guess = state["top"][0][0]
            ids = [t["id"] for t in activations(client, start + guess["text"])["tokens"]]
            if ids == [first["tokens"][0]["id"], guess["id"]]:
                prompt = start + guess["text"]
                break
        if prompt:
            break
    assert prompt, "no prompt found whose second token is a top guess"
    want = activations(client, prompt)
    ids = [t["id"] for t in want["tokens"]]
    hits = [[top[0]["id"] == (ids[q + 1] if q + 1 < len(ids) else None) for q, top in enumerate(state["top"])]
            for state in want["logit_lens"]]
    assert any(any(row) for row in hits)
    body = forward(client, prompt)
    assert [["hit" in c.split() for c in cells] for cells in lens_rows(body)] == hits
    assert body.count("matches the next token of the prompt") == sum(map(sum, hits))


def test_forward_partial_escapes_the_prompt(client: TestClient) -> None:
    body = forward(client, '<b>bold</b><script>alert("x")</script>')
    assert "<b>" not in body and "<script>alert" not in body
    assert "&lt;" in body  # the chips show it as text
    # and the heatmaps' labels and readouts as escaped text
    attn = element(body, "div", "int-attn")
    assert "<b>" not in attn and "<script" not in attn
    assert '<text class="row-label"' in attn and ">&lt;</text>" in attn
    assert 'data-say="Block 1, head 0: {r} gives {v} of its attention to {c}."' in attn
    # and the logit lens, an SVG now: its tokens along the top and its guesses as escaped text
    lens = element(body, "svg", "int-lens")
    assert "<b>" not in lens and "<script" not in lens and ">&lt;</text>" in lens
    names = json.loads(unescape(re.search(r"data-names='([^']*)'", attn).group(1)))
    assert names["r"][0] == "“<” (position 0)" and "\\u003c" in attn  # JSON in an attribute: no raw "<"


def test_forward_partial_problems_are_messages(client: TestClient) -> None:
    body = forward(client, "")
    assert '<p class="message">' in body and "Type a prompt" in body and "int-lens" not in body
    # no figure of an earlier prompt stays beside the message: the heatmaps and thumbnails come back empty
    assert re.search(r'<div id="int-attn" class="lab-heatmap" hx-swap-oob="true">\s*</div>', body)
    assert '<div id="int-norms" class="lab-norms" hx-swap-oob="true"></div>' in body
    assert "<rect" not in body and body.count('<input type="radio" name="head"') == 4
    body = forward(client, "cat " * 300)  # past the tiny model's context of 64
    assert 'class="message error"' in body and "reads at most 64" in body
    # the page shows the same messages in place of the strip, and keeps empty tables for the partial to fill
    html = client.get("/internals", params={"prompt": "cat " * 300}).text
    assert "reads at most 64" in html
    assert re.search(r'<svg id="int-lens" class="lab-lens" role="table" aria-label="[^"]*">\s*</svg>', html)
    assert "Type a prompt" in client.get("/internals", params={"prompt": ""}).text


def test_internals_page_renders_the_forward_pass(client: TestClient) -> None:
    html = client.get("/internals", params={"prompt": "The cat sat"}).text
    assert len(lens_rows(html)) == 3 and 'hx-swap-oob' not in element(html, "svg", "int-lens")
    assert "<caption>for “ sat” (position 2)</caption>" in html
    assert re.search(r'<textarea id="int-prompt"[^>]*hx-post="/partials/forward"', html)
