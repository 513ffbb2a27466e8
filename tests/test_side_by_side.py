"""Two local models side by side (DEEPDIVE_SECOND_MODEL): the shipped model and the tiny random GPT-2 on the
Inference, Playground and Training pages, their state in the URL."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import anyio
import pytest
from fastapi.testclient import TestClient

from app.schemas import requests as rq
from app.config import Settings
from app.main import create_app
from app.templating import pct
from helpers import expect_http_error
from model.decode.generate import generate
from model.nets.gpt2 import GPT
from model.decode.sampling import SamplingParams
from model.tokenizers.tokenizer import gpt2_tokenizer

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def client(tiny_checkpoint, tmp_path_factory) -> Iterator[TestClient]:
    second = tmp_path_factory.mktemp("second") / "tiny-second"
    shutil.copytree(tiny_checkpoint, second)
    with TestClient(create_app(Settings(threads=1, second_model=str(second)))) as c:
        yield c


def top_of(client: TestClient, key: str, text: str, n: int) -> list[tuple[str, float]]:
    engine = client.app.state.sources.get(key).engine
    r = anyio.run(engine.next_token, rq.NextTokenRequest(text=text, n=n))
    return [(c.text, c.prob) for c in r.before]


def columns(body: str) -> list[tuple[str, list[str]]]:
    """Each side-by-side column's heading and its bars' labels."""
    out = []
    for col in body.split('<section class="models-column"')[1:]:
        name = re.search(r"<h3>([^<]*)<span", col).group(1).strip()
        out.append((name, re.findall(r'<div class="lab-bar" aria-label="([^"]*)"', col)))
    return out


def test_the_inference_page_shows_both_models_for_the_same_text(client: TestClient) -> None:
    page = client.get("/inference", params={"prompt": PROMPT, "compare": "second", "n": "5"})
    assert page.status_code == 200
    (first, bars1), (second, bars2) = columns(page.text)
    assert (first, second) == ("deepdive-tiny", "tiny-second")
    assert bars1 == [f"“{t}”: {pct(p)}" for t, p in top_of(client, "local", PROMPT, 5)]
    assert bars2 == [f"“{t}”: {pct(p)}" for t, p in top_of(client, "second", PROMPT, 5)]
    assert "17.7 M parameters" in page.text and '<option value="second" selected>' in page.text


def test_a_step_moves_both_columns_and_the_url_keeps_the_comparison(client: TestClient) -> None:
    r = client.post("/partials/inference", data={"prompt": PROMPT, "steps": "", "n": "5", "compare": "second",
                                                 "action": "greedy"})
    query = parse_qs(urlparse(r.headers["HX-Replace-Url"]).query)
    best = top_of(client, "local", PROMPT, 1)[0][0]
    assert query["compare"] == ["second"] and "model" not in query
    assert 'id="inf-beside"' in r.text and 'hx-swap-oob="true"' in r.text
    (_, _), (_, bars2) = columns(r.text)
    assert bars2 == [f"“{t}”: {pct(p)}" for t, p in top_of(client, "second", PROMPT + best, 5)]


def test_the_stepper_runs_on_the_second_model(client: TestClient, tiny_model: GPT) -> None:
    ids = gpt2_tokenizer().encode(PROMPT)
    best = [st.id for st in generate(tiny_model, ids, SamplingParams(temperature=0), 2)]
    r = client.post("/partials/inference", data={"prompt": PROMPT, "steps": "", "model": "second", "action": "greedy"})
    query = {k: v[0] for k, v in parse_qs(urlparse(r.headers["HX-Replace-Url"]).query).items()}
    assert query["steps"] == f"second~g{best[0]}t100" and query["model"] == "second"
    r = client.post("/partials/inference", data={"prompt": PROMPT, "steps": query["steps"], "model": "second",
                                                 "action": "greedy"})
    query = {k: v[0] for k, v in parse_qs(urlparse(r.headers["HX-Replace-Url"]).query).items()}
    assert query["steps"] == f"second~g{best[0]}t100.g{best[1]}t100"
    page = client.get("/inference", params=query)
    assert f'value="second~g{best[0]}t100.g{best[1]}t100"' in page.text and "could not be read" not in page.text
    # the loaded model's steps are not the second model's: a switch starts from the prompt
    r = client.post("/partials/inference", data={"prompt": PROMPT, "steps": f"g{best[0]}", "model": "second"})
    assert 'id="inf-steps" name="steps" value=""' in r.text
    page = client.get("/inference", params={"prompt": PROMPT, "steps": f"g{best[0]}", "model": "second"})
    assert "could not be read" in page.text


def test_the_playground_writes_with_both_models(client: TestClient, tiny_model: GPT) -> None:
    page = client.get("/playground", params={"model": "second", "compare": "local"})
    assert page.status_code == 200 and 'id="pg-models"' in page.text
    assert '<option value="second" selected>' in page.text and '<option value="local" selected>' in page.text
    r = client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 6, "temperature": 0,
                                                  "model": "second"})
    events = [json.loads(d) for d in re.findall(r"event: token\ndata: (.*)\n\n", r.text)]
    expected = [st.id for st in generate(tiny_model, gpt2_tokenizer().encode(PROMPT), SamplingParams(temperature=0), 6)]
    assert [e["id"] for e in events] == expected
    r = client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 6, "model": "nobody", "x": 1})
    expect_http_error(r, 422, "not a field")


def test_the_training_page_scores_with_the_chosen_model(client: TestClient) -> None:
    text = "Once upon a time there was a cat."
    engine = client.app.state.sources.get("second").engine
    r = anyio.run(engine.score, rq.ScoreRequest(text=text, prepend_eos=True))
    body = client.post("/partials/loss", data={"text": text, "model": "second"}).text
    assert re.search(r'data-stat="mean-loss">([^<]*)', body).group(1) == f"{r.mean_loss:.2f}"


def test_one_model_servers_show_no_chooser(tiny_checkpoint) -> None:
    with TestClient(create_app(Settings(model=str(tiny_checkpoint), threads=1))) as c:
        for path in ("/inference", "/playground", "/loss"):
            assert 'name="model"' not in c.get(path).text, path


def test_internals_looks_inside_the_model_the_link_names(client: TestClient) -> None:
    """?model=second shows the second model's architecture and forward pass, and the page's own requests name it
    (htmx inherits hx-vals), so its partials look inside the same model."""
    tiny = client.app.state.sources.get("second").engine
    page = client.get("/internals", params={"model": "second", "prompt": PROMPT})
    assert page.status_code == 200
    assert "The architecture of tiny-second" in page.text
    assert "hx-vals='{\"model\": \"second\"}'" in page.text
    assert f"{tiny.info().parameters['total']:,} numbers" in page.text
    assert "Model loaded: <strong>tiny-second</strong>" in page.text
    main = client.get("/internals", params={"prompt": PROMPT})
    assert "The architecture of deepdive-tiny" in main.text and "hx-vals='{\"model\"" not in main.text
    # the same prompt's logit lens differs between the two models: each partial ran the model it names
    lens = [client.post("/partials/forward", data={"prompt": PROMPT, "model": key}).text for key in ("second", "local")]
    assert lens[0] != lens[1]
    expected = anyio.run(tiny.activations, rq.ActivationsRequest(text=PROMPT, logit_lens=3, neurons=5))
    assert all(f"“{top[0].text}”" in lens[0] for top in expected.logit_lens[-1].top)
