"""The Inference stepper, rendered by the server: each action, its state in the URL, and hostile links."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient

from app.schemas import requests as rq
from app.config import Settings
from app.serving.engine import Engine
from app.views.stepper import format_steps, parse_steps
from app.views.stepping import LocalSteps, RemoteSteps, Taken, Under
from model.tokenizers.tokenizer import EOT_ID

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def settings(tiny_checkpoint) -> Settings:
    return Settings(model=str(tiny_checkpoint), max_new_tokens=40)


def act(client: TestClient, steps: str = "", prompt: str = PROMPT, **form) -> tuple[str, dict]:
    data = {"prompt": prompt, "steps": steps, "temperature": "1", "top_k": "0", "top_p": "1", "seed": "42", "n": "10",
            **form}
    r = client.post("/partials/inference", data=data)
    assert r.status_code == 200, r.text
    url = r.headers["HX-Replace-Url"]
    assert url.startswith("/inference")
    return r.text, {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def steps_of(body: str) -> str:
    return re.search(r'id="inf-steps" name="steps" value="([^"]*)"', body).group(1)


def history(body: str) -> list[str]:
    return re.findall(r"<td>((?:sampled|the most likely|chosen by hand)[^<]*)</td>", body)


async def top_id(engine: Engine, ids: list[int]) -> int:
    return (await engine.next_token(rq.NextTokenRequest(ids=ids, n=1))).before[0].id


def test_steps_round_trip(engine: Engine):
    model = LocalSteps(engine)  # GPT-2's vocabulary of 50,257 tokens
    steps = [Taken("g", 318), Taken("s", 464), Taken("h", 1110)]
    assert format_steps(steps, model) == "g318.s464.h1110"
    assert parse_steps("g318.s464.h1110", model) == steps
    assert parse_steps("", model) == []
    for bad in ("x12", "g", "g12.", "g99999999", "g50257", f"s{EOT_ID}", "g1;s2", "g1." * 2000, "g1t300", "g1k20",
                "g1t100k99", "g1t100p2", "g1t100p101", "g1t100r"):
        assert parse_steps(bad, model) is None, bad


def test_each_step_keeps_its_settings_in_the_link(engine: Engine):
    model = LocalSteps(engine)
    steps = [Taken("g", 318, Under(1.0, 0, 1.0)), Taken("s", 464, Under(0.7, 20, 0.9, 43)), Taken("h", 1110)]
    assert format_steps(steps, model) == "g318t100.s464t70k20p90r43.h1110"
    assert parse_steps("g318t100.s464t70k20p90r43.h1110", model) == steps


def test_a_model_server_s_steps_are_its_token_texts():
    """A model server knows tokens only by their text: a step keeps it (base64url), whatever it holds."""
    model = RemoteSteps(server=None)
    steps = [Taken("g", " the"), Taken("s", "é\n<b>", Under(0.7, 20, 0.9, 43))]
    written = format_steps(steps, model)
    assert written == "gIHRoZQ.sw6kKPGI-~t70k20p90r43"
    assert parse_steps(written, model) == steps
    for bad in ("g!!", "g_w", "g" + "A" * 801):  # not base64url, not UTF-8, too long
        assert parse_steps(bad, model) is None, bad


def test_a_step_keeps_the_chance_it_was_taken_with(client: TestClient):
    """Two greedy steps at temperature 1, then the temperature moves to 2: the history still shows the
    chances the steps had (and says under which settings), while the bars follow the new temperature."""
    one, _ = act(client, action="greedy")
    two, _ = act(client, steps=steps_of(one), action="greedy")
    then = re.findall(r'<td class="r">([\d.]+%)</td>', two)
    later, query = act(client, steps=steps_of(two), temperature="2")
    assert re.findall(r'<td class="r">([\d.]+%)</td>', later) == then
    assert history(later) == ["the most likely (temperature 1)"] * 2
    assert query["steps"] == steps_of(two) and query["temperature"] == "2"
    # a sample at temperature 2 keeps its seed when the seed changes afterwards
    third, _ = act(client, steps=steps_of(two), temperature="2", action="sample")
    moved, _ = act(client, steps=steps_of(third), temperature="2", seed="7")
    assert history(moved)[0] == "sampled, seed 44 (temperature 2)"


def test_greedy_appends_the_most_likely_token(client: TestClient, engine: Engine):
    import anyio
    ids = engine.tokenizer.encode(PROMPT)
    body, query = act(client, action="greedy")
    best = anyio.run(top_id, engine, ids)
    assert steps_of(body) == f"g{best}t100" and query["steps"] == f"g{best}t100"
    assert history(body) == ["the most likely (temperature 1)"]
    assert body.count('class="chip') >= 2  # the new token in the text so far and in the history
    assert len(re.findall(r'<button type="submit" name="pick"', body)) == 10


def test_sampling_is_seeded_by_the_step_number(client: TestClient):
    first, _ = act(client, action="sample")
    again, _ = act(client, action="sample")
    assert steps_of(first) == steps_of(again)  # the same seed + step draws the same token
    two, query = act(client, steps=steps_of(first), action="sample")
    assert steps_of(two).startswith(steps_of(first) + ".s")
    assert "sampled, seed 43" in body_history(two)
    assert query["steps"] == steps_of(two)
    undone, query = act(client, steps=steps_of(two), action="undo")
    assert steps_of(undone) == steps_of(first) and query["steps"] == steps_of(first)
    reset, query = act(client, steps=steps_of(two), action="reset")
    assert steps_of(reset) == "" and "steps" not in query


def body_history(body: str) -> str:
    return " | ".join(history(body))


def test_a_hand_picked_bar_is_recorded(client: TestClient, engine: Engine):
    body, query = act(client, pick="1110")
    assert steps_of(body) == "h1110t100" and history(body) == ["chosen by hand (temperature 1)"]
    body, _ = act(client, steps="h1110t100", pick=str(EOT_ID))
    assert steps_of(body) == "h1110t100"  # <|endoftext|> ends the text instead of joining it
    assert "thinks the text is finished" in body


def test_a_link_restores_the_steps_and_settings(client: TestClient):
    html = client.get("/inference", params={"prompt": PROMPT, "steps": "g11.s13.h1110", "seed": "7",
                                            "temperature": "0.5"}).text
    assert 'name="steps" value="g11.s13.h1110"' in html
    assert len(re.findall(r'class="chip c\d lab-new"', html)) == 3
    assert "next sample: seed 7 + step 3 = 10" in html
    assert history(html) == ["chosen by hand", "sampled, seed 8", "the most likely"]  # newest first


@pytest.mark.parametrize("steps", ["g11.zz", "g999999", f"g{EOT_ID}"])
def test_a_mangled_link_starts_from_the_prompt(client: TestClient, steps: str):
    r = client.get("/inference", params={"prompt": PROMPT, "steps": steps})
    assert r.status_code == 200
    assert "steps could not be read" in r.text and 'name="steps" value=""' in r.text


def test_steps_past_the_context_are_dropped_with_a_word(client: TestClient, engine: Engine):
    steps = ".".join(["g11"] * engine.info().n_ctx)
    body, _ = act(client, steps=steps)
    assert "do not fit the model&#39;s context" in body and steps_of(body) == ""


def test_a_full_context_refuses_another_step(client: TestClient, engine: Engine):
    n = engine.info().n_ctx - len(engine.tokenizer.encode(PROMPT))
    steps = ".".join(["g11"] * n)
    body, _ = act(client, steps=steps, action="greedy")
    assert "fills the model&#39;s whole context" in body and steps_of(body) == steps


@pytest.mark.parametrize("prompt,words", [("", "Type a prompt above"), ("x " * 300, "reads at most")])
def test_bad_prompts_are_a_message(client: TestClient, prompt: str, words: str):
    body, _ = act(client, prompt=prompt, action="sample")
    assert words in body


def test_token_texts_are_escaped(client: TestClient, engine: Engine):
    lt = engine.tokenizer.encode("<")[0]
    body, _ = act(client, prompt="<b>bold</b>", pick=str(lt))
    assert "<b>" not in body and "&lt;b&gt;bold&lt;/b&gt;" in body  # the prompt, in the text so far
    assert re.search(r'class="chip c0 lab-new"[^>]*>&lt;</span>', body)  # the picked token


def test_a_pick_outside_the_vocabulary_is_refused_in_words(client: TestClient):
    body, _ = act(client, steps="g11", pick="50300")
    assert steps_of(body) == "g11" and "not a token of this model" in body  # a step without its settings
