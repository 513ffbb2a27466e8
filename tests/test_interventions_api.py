"""Interventions and activation patching through the API: what comes back, and what is refused."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from helpers import expect_http_error
from model.tokenizers.tokenizer import gpt2_tokenizer

PROMPT = "The cat sat on the mat and the cat"


@pytest.fixture(scope="module")
def settings(tiny_checkpoint) -> Settings:
    return Settings(model=str(tiny_checkpoint), threads=1, max_text_chars=5000, max_activation_values=50_000)


def post(client: TestClient, path: str, **body) -> dict:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_next_token_with_interventions(client: TestClient) -> None:
    plain = post(client, "/api/next-token", text=PROMPT, n=5)
    assert post(client, "/api/next-token", text=PROMPT, n=5, interventions=[]) == plain
    off = post(client, "/api/next-token", text=PROMPT, n=5,
               interventions=[{"kind": "head", "block": 1, "index": 2}, {"kind": "mlp", "block": 0},
                              {"kind": "neuron", "block": 1, "index": 200, "mode": "mean"}])
    assert off["before"] != plain["before"]
    # the same set again gives the same answer: nothing of one request stays in the model
    assert post(client, "/api/next-token", text=PROMPT, n=5, interventions=[{"kind": "mlp", "block": 0}]) != plain
    assert post(client, "/api/next-token", text=PROMPT, n=5) == plain


def test_score_and_activations_with_interventions(client: TestClient) -> None:
    ivs = [{"kind": "attn", "block": 0}]
    assert post(client, "/api/score", text=PROMPT)["mean_loss"] != post(client, "/api/score", text=PROMPT,
                                                                        interventions=ivs)["mean_loss"]
    body = dict(text=PROMPT, residual_norms=False, neurons=3)
    plain = post(client, "/api/activations", **body)
    off = post(client, "/api/activations", **body, interventions=[{"kind": "neuron", "block": 1, "index":
                                                                  plain["neurons"][1]["top"][0][0]["neuron"]}])
    assert plain["neurons"][0] == off["neurons"][0]  # block 0 comes before the switched-off neuron
    top = plain["neurons"][1]["top"][0][0]["neuron"]
    assert all(n["neuron"] != top for n in off["neurons"][1]["top"][0])  # it reads 0 now


BAD = [
    ([{"kind": "head", "block": 2, "index": 0}], "this model has 2 blocks, so choose 0 to 1"),
    ([{"kind": "head", "block": 0, "index": 4}], "4 heads per block, so choose 0 to 3"),
    ([{"kind": "neuron", "block": 0, "index": 256}], "256 neurons per block, so choose 0 to 255"),
    ([{"kind": "neuron", "block": 0}], "needs an index"),
    ([{"kind": "mlp", "block": 0, "index": 1}], "leave index out"),
    ([{"kind": "layer", "block": 0}], "Fix interventions.0.kind"),
    ([{"kind": "head", "block": -1, "index": 0}], "Fix interventions.0.block"),
    ([{"kind": "head", "block": 0, "index": 0, "mode": "half"}], "Fix interventions.0.mode"),
    ([{"kind": "mlp", "block": 0}] * 300, "at most 256"),
    ([{"kind": "mlp", "block": 0, "extra": 1}], "Remove interventions.0.extra"),
    ("head 1.2", "Fix interventions"),
]


@pytest.mark.parametrize("path", ["/api/next-token", "/api/score", "/api/activations"])
@pytest.mark.parametrize(("ivs", "message"), BAD, ids=[m[:30] for _, m in BAD])
def test_bad_interventions_are_refused_with_a_sentence(client: TestClient, path: str, ivs, message: str) -> None:
    said = expect_http_error(client.post(path, json={"text": PROMPT, "interventions": ivs}), 422, re.escape(message))
    assert said[0].isupper() and said.endswith("."), said


def test_patch_grid(client: TestClient) -> None:
    clean, corrupted = "When Mary and John went out, John gave it to", "When Mary and John went out, Mary gave it to"
    g = post(client, "/api/patch", clean=clean, corrupted=corrupted, answers=[" Mary", " John"])
    n = len(gpt2_tokenizer().encode(clean))
    assert [t["text"] for t in g["answers"]] == [" Mary", " John"]
    assert len(g["clean_tokens"]) == len(g["corrupted_tokens"]) == n
    assert len(g["grid"]) == 2 and all(len(row) == n for row in g["grid"])
    # the prompts differ in one token: patching it where it enters block 0 restores the clean answer
    k = next(i for i, (a, b) in enumerate(zip(g["clean_tokens"], g["corrupted_tokens"])) if a != b)
    assert g["grid"][0][k] == pytest.approx(g["clean"], abs=1e-3)
    assert g["normalised"][0][k] == pytest.approx(1, abs=1e-3)
    ids = gpt2_tokenizer().encode(" Mary") + gpt2_tokenizer().encode(" John")
    assert post(client, "/api/patch", clean=clean, corrupted=corrupted, answers=ids)["grid"] == g["grid"]


PATCH_BAD = [
    ({"clean": "The cat sat", "corrupted": "The elephant sat down", "answers": [" on", " in"]},
     "the clean prompt is 3 tokens and the corrupted one 4"),
    ({"clean": "The cat sat", "corrupted": "", "answers": [" on", " in"]}, "one of them is empty"),
    ({"clean": "The cat sat", "corrupted": "The dog sat", "answers": [" on the", " in"]}, "The answer ' on the' is 2 tokens"),
    ({"clean": "The cat sat", "corrupted": "The dog sat", "answers": [" on", " on"]}, "two different tokens"),
    ({"clean": "The cat sat", "corrupted": "The dog sat", "answers": [" on"]}, "Fix answers"),
    ({"clean": "The cat sat", "corrupted": "The dog sat", "answers": [" on", 60000]}, "The id 60000 is not a token of this model"),
    ({"clean": "a " * 70, "corrupted": "b " * 70, "answers": [" on", " in"]}, "at most 64"),
]


@pytest.mark.parametrize(("body", "message"), PATCH_BAD, ids=[m[:30] for _, m in PATCH_BAD])
def test_bad_patch_requests_are_refused_with_a_sentence(client: TestClient, body: dict, message: str) -> None:
    said = expect_http_error(client.post("/api/patch", json=body), 422, "(?i)" + re.escape(message))
    assert said.endswith("."), said


def test_documented_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "/api/patch" in spec["paths"]
    assert schemas["PatchRequest"]["examples"][1]["answers"] == [" Paris", " Rome"]
    for name in ("NextTokenRequest", "ScoreRequest", "ActivationsRequest"):
        assert schemas[name]["properties"]["interventions"]["maxItems"] == 256
        assert any("interventions" in e for e in schemas[name]["examples"]), name
    assert set(schemas["InterventionIn"]["properties"]["kind"]["enum"]) == {"head", "neuron", "attn", "mlp"}


# --- the Internals page: switching parts off ----------------------------------------------------

def test_off_field_round_trips() -> None:
    from app.views.ablation import format_off, parse_off, toggle
    ivs = parse_off("h1.2, n0.42:mean,a1,m0,h1.2")
    assert format_off(ivs) == "h1.2,n0.42:mean,a1,m0"  # each part once, in order
    assert [parse_off(bad) for bad in ("h1", "a1.2", "x3", "h1.2:max", "h1.2,,m0")] == [None] * 5
    assert format_off(toggle(ivs, "a1", "zero")) == "h1.2,n0.42:mean,m0"
    assert format_off(toggle(ivs, "h0.3", "mean")) == "h1.2,n0.42:mean,a1,m0,h0.3:mean"


def pressed(html: str) -> list[str]:
    import re
    return re.findall(r'class="ab-part off" aria-pressed="true"\s+hx-post="/partials/ablate" hx-target="#int-ablate" '
                      r'hx-vals=\'\{"toggle": "([^"]+)"\}\'', html)


def test_internals_link_restores_the_set_and_a_click_changes_the_bars(client: TestClient) -> None:
    import re
    page = client.get("/internals", params={"prompt": PROMPT, "off": "h1.2,m0"})
    assert page.status_code == 200
    assert sorted(pressed(page.text)) == ["h1.2", "m0"]
    assert 'name="off" value="h1.2,m0"' in page.text and 'data-url-value="h1.2,m0"' in page.text
    plain = client.post("/partials/ablate", data={"prompt": PROMPT, "off": ""})
    clicked = client.post("/partials/ablate", data={"prompt": PROMPT, "off": "", "toggle": "a0"})
    assert pressed(clicked.text) == ["a0"] and 'data-url-value="a0"' in clicked.text
    numbers = lambda html: re.findall(r'class="r ab-now-p">([^<]+)<', html)  # noqa: E731
    assert numbers(clicked.text) != numbers(plain.text)
    # the unchanged column stays the model's own
    was = lambda html: re.findall(r'</svg></td>\s*<td class="r">([^<]+)<', html)  # noqa: E731
    assert was(clicked.text)[:3] == was(plain.text)[:3]
    # the head the attention view shows, by the form's layer and head
    shown = client.post("/partials/ablate", data={"prompt": PROMPT, "off": "a0", "toggle": "shown-head",
                                                  "layer": "1", "head": "3"})
    assert sorted(pressed(shown.text)) == ["a0", "h1.3"]


def test_a_bad_link_switches_everything_back_on(client: TestClient) -> None:
    r = client.get("/internals", params={"prompt": PROMPT, "off": "h7.0"})
    assert r.status_code == 200 and "names block 7; this model has 2 blocks" in r.text and pressed(r.text) == []
    r = client.get("/internals", params={"prompt": PROMPT, "off": "nonsense"})
    assert r.status_code == 200 and "could not be read" in r.text


# --- the Inference stepper with the set switched off -------------------------------------------

def test_the_stepper_runs_with_the_set_off(client: TestClient) -> None:
    body = {"prompt": PROMPT, "steps": "", "seed": "7", "temperature": "1", "top_k": "0", "top_p": "1", "n": "10"}
    plain = client.post("/partials/inference", data=body)
    off = client.post("/partials/inference", data={**body, "off": "a0,a1,m0"})
    assert plain.status_code == off.status_code == 200
    assert off.text != plain.text
    assert "off=a0%2Ca1%2Cm0" in off.headers["HX-Replace-Url"]
    # a greedy step takes the switched-off model's most likely token, and the link keeps the set
    step = client.post("/partials/inference", data={**body, "off": "a0,a1,m0", "action": "greedy"})
    want = post(client, "/api/next-token", text=PROMPT, n=1,
                interventions=[{"kind": "attn", "block": 0}, {"kind": "attn", "block": 1}, {"kind": "mlp", "block": 0}])
    assert f"steps=g{want['before'][0]['id']}" in step.headers["HX-Replace-Url"]
    # sampling with the set off is seeded: the same seed draws the same token
    urls = {client.post("/partials/inference", data={**body, "off": "h1.0", "action": "sample"}).headers["HX-Replace-Url"]
            for _ in range(2)}
    assert len(urls) == 1 and "steps=s" in urls.pop()
    page = client.get("/inference", params={"prompt": PROMPT, "off": "h1.0,m0:mean"})
    assert "Running with parts of the model switched off: block 1 head 0, block 0 MLP (mean)" in page.text
    assert 'name="off" value="h1.0,m0:mean"' in page.text
    bad = client.get("/inference", params={"prompt": PROMPT, "off": "h9.0"})
    assert bad.status_code == 200 and "names block 9" in bad.text


# --- the patching grid on the Internals page ------------------------------------------------------

def test_patching_grid_presets_and_sentences(client: TestClient) -> None:
    import re
    from app.demo import PATCH_PRESETS
    page = client.get("/internals", params={"prompt": PROMPT})
    assert 'id="pt-form"' in page.text and 'hx-trigger="load"' in page.text  # the grid loads after the page
    for p in PATCH_PRESETS:
        r = client.post("/partials/patch", data={"preset": p["key"]})
        assert r.status_code == 200
        if p.get("needs") == "large":  # the tiny random model is no larger model
            assert "(needs a larger model)" in r.text
        n = len(gpt2_tokenizer().encode(p["clean"]))
        if n == len(gpt2_tokenizer().encode(p["corrupted"])):
            rows = re.findall(r"<tr><th scope=\"row\">\d+</th>(.*?)</tr>", r.text, re.S)
            assert len(rows) == 2 and all(row.count('class="pt-cell"') == n for row in rows)
        else:
            assert "the grid pairs them position by position" in r.text
    r = client.post("/partials/patch", data={"clean": "The cat sat", "corrupted": "The dog sat", "right": " on the",
                                             "wrong": " in"})
    assert "The answer &#39; on the&#39; is 2 tokens" in r.text
    # a link's fields are the form's
    page = client.get("/internals", params={"clean": "The cat sat", "corrupted": "The dog sat", "right": " on",
                                            "wrong": " in"})
    assert ">The dog sat</textarea>" in page.text


# --- a cell of the grid opens the stepper with that patch -----------------------------------------

CLEAN, CORRUPTED = "The cat sat on the mat and the cat", "The dog sat on the mat and the dog"


def test_a_grid_cell_links_to_the_stepper_with_its_patch(client: TestClient) -> None:
    import html
    r = client.post("/partials/patch", data={"clean": CLEAN, "corrupted": CORRUPTED, "right": " sat", "wrong": " ran"})
    links = [html.unescape(h) for h in re.findall(r'<a class="pt-cell" href="([^"]+)"', r.text)]
    assert len(links) == 2 * len(gpt2_tokenizer().encode(CLEAN))  # every cell of the 2 blocks
    assert "/inference?prompt=The+dog+sat+on+the+mat+and+the+dog&patch=1.2&clean=The+cat+sat" in "\n".join(links)


def test_the_stepper_runs_the_corrupted_prompt_with_the_patch(client: TestClient, engine) -> None:
    from model.probes.interventions import patched_logits
    body = {"prompt": CORRUPTED, "steps": "", "seed": "7", "temperature": "1", "top_k": "0", "top_p": "1", "n": "10"}
    plain = client.post("/partials/inference", data=body)
    last = len(gpt2_tokenizer().encode(CLEAN)) - 1  # " cat" written over the last " dog", at block 0
    patched = client.post("/partials/inference", data={**body, "patch": f"0.{last}", "clean": CLEAN})
    assert plain.status_code == patched.status_code == 200
    want = patched_logits(engine.loaded.model, *(gpt2_tokenizer().encode(t) for t in (CLEAN, CORRUPTED)),
                          [(0, last)])[-1].topk(10).indices.tolist()
    bars = lambda r: [int(i) for i in re.findall(r'data-id="(\d+)"', r.text)]  # noqa: E731
    assert bars(patched) == want != bars(plain)
    assert f"patch=0.{last}&clean=The+cat" in patched.headers["HX-Replace-Url"]
    # a greedy step is the patched model's, and the link keeps the patch
    step = client.post("/partials/inference", data={**body, "patch": f"0.{last}", "clean": CLEAN, "action": "greedy"})
    assert f"steps=g{want[0]}" in step.headers["HX-Replace-Url"]
    assert f"patch=0.{last}" in step.headers["HX-Replace-Url"]
    page = client.get("/inference", params={"prompt": CORRUPTED, "patch": f"0.{last}", "clean": CLEAN})
    assert f"Running with a patch: at token {last} (“ dog”)" in page.text
    assert 'name="patch" value="0.' in page.text and 'name="clean" value="The cat sat' in page.text


@pytest.mark.parametrize("patch, clean, says", [
    ("2.0", CLEAN, "names block 2; this model has 2 blocks"),
    ("0.40", CLEAN, "copies token 40, but the clean prompt has 9 tokens"),
    ("0.3", "", "this link gives none"),
    ("x.y", CLEAN, "could not be read"),
    ("99999999.1", CLEAN, "could not be read"),
    ("0.1", "x" * 6000, "the limit is 5,000"),
])
def test_a_hostile_patch_gets_a_sentence(client: TestClient, patch: str, clean: str, says: str) -> None:
    r = client.get("/inference", params={"prompt": CORRUPTED, "patch": patch, "clean": clean})
    assert r.status_code == 200 and says in r.text
    assert "Running with a patch" not in r.text


def test_a_head_thumbnail_switches_its_head_off(client: TestClient) -> None:
    # each thumbnail of the shown block (the last, 1, by default) has its own off button, pressed when that head is off
    page = client.get("/internals", params={"prompt": PROMPT, "off": "h1.2"})
    buttons = re.findall(r'<button type="button" class="ab-thumb-off" data-head-off="(\d)"\s+aria-pressed="(\w+)"'
                         r'[^>]*hx-vals=\'\{"toggle": "shown-head", "head": "(\d)"\}\'', page.text)
    assert buttons == [(str(h), "true" if h == 2 else "false", str(h)) for h in range(4)]
    # its post: the form's fields, the shown block among them, with the thumbnail's own head
    r = client.post("/partials/ablate", data={"prompt": PROMPT, "off": "h1.2", "toggle": "shown-head", "layer": "0",
                                              "head": "3"})
    assert 'data-url-value="h1.2,h0.3"' in r.text
    hostile = client.post("/partials/ablate", data={"prompt": PROMPT, "off": "", "toggle": "shown-head", "layer": "0",
                                                    "head": "3<script>"})
    assert hostile.status_code == 200 and 'data-url-value=""' in hostile.text and "<script>" not in hostile.text


def test_the_logit_lens_marks_each_probabilitys_change(client: TestClient) -> None:
    def lens(off: str) -> list[tuple[str, str, str]]:
        r = client.post("/partials/ablate", data={"prompt": PROMPT, "off": off})
        table = r.text[r.text.index('<table class="ab-lens'):]
        cell = r'<td class="r ab-change \w+" title="([^ ]+) percentage points">'
        return re.findall(r'<th scope="row">([^<]+)</th>.*?' + cell, table, re.S)

    assert lens("") == [("embeddings", "+0.0000"), ("after block 0", "+0.0000"), ("after block 1", "+0.0000")]
    rows = lens("a0,a1,m0")
    assert [label for label, _ in rows] == ["embeddings", "after block 0", "after block 1"]
    assert rows[0][1] == "+0.0000"  # nothing switched off acts before the first block
    # the last state is the model's own prediction: its change is the top bar's
    plain = post(client, "/api/next-token", text=PROMPT, n=1)["before"][0]
    off = post(client, "/api/next-token", text=PROMPT, n=1, targets=[plain["id"]],
               interventions=[{"kind": "attn", "block": 0}, {"kind": "attn", "block": 1}, {"kind": "mlp", "block": 0}])
    assert float(rows[-1][1]) == pytest.approx(100 * (off["targets"][0]["prob"] - plain["prob"]), abs=2e-4)
    assert float(rows[-1][1]) != 0


def test_the_patch_note_escapes_the_clean_prompt(client: TestClient) -> None:
    clean = "<b>The</b> cat sat on the mat and the cat"
    page = client.get("/inference", params={"prompt": CORRUPTED, "patch": "1.2", "clean": clean})
    assert "Running with a patch" in page.text
    assert "&lt;b&gt;The&lt;/b&gt; cat" in page.text and "<b>The</b>" not in page.text
