"""The official openai package drives /v1/completions and /v1/models on a real server."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import torch

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app
from live_server import serve
from model.decode.generate import generate
from model.nets.gpt2 import GPT
from model.decode.sampling import SamplingParams
from model.tokenizers.tokenizer import gpt2_tokenizer


@pytest.fixture(scope="module")
def client(tiny_checkpoint) -> Iterator[openai.OpenAI]:
    settings = Settings(model=str(tiny_checkpoint), threads=1, max_new_tokens=40)
    with serve(create_app(settings, Engine.load(settings))) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=60)


def greedy_ids(model: GPT, prompt: str, n: int) -> list[int]:
    return [s.id for s in generate(model, gpt2_tokenizer().encode(prompt), SamplingParams(temperature=0), n)]


def test_models_lists_the_loaded_model(client: openai.OpenAI, tiny_checkpoint) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [tiny_checkpoint.name]


def test_completion_with_logprobs(client: openai.OpenAI, tiny_model: GPT) -> None:
    prompt = "Once upon a time"
    r = client.completions.create(model="any", prompt=prompt, max_tokens=8, temperature=0, logprobs=3)
    choice = r.choices[0]
    ids = greedy_ids(tiny_model, prompt, 8)
    assert choice.text == gpt2_tokenizer().decode(ids)
    assert choice.finish_reason == "length"
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 8 and r.usage.total_tokens == 12
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset[0] == len(prompt)
    with torch.inference_mode():
        logits = tiny_model(torch.tensor([gpt2_tokenizer().encode(prompt) + ids]))[0, 3:-1].log_softmax(-1)
    assert lp.token_logprobs == pytest.approx([float(logits[i, t]) for i, t in enumerate(ids)], abs=1e-4)
    assert all(len(top) == 3 and max(top.values()) == pytest.approx(lp.token_logprobs[i], abs=1e-4)
               for i, top in enumerate(lp.top_logprobs))  # greedy: the chosen token is the top one


def test_streamed_completion_equals_the_whole(client: openai.OpenAI) -> None:
    args = {"model": "any", "prompt": "The dog", "max_tokens": 10, "temperature": 0.8, "seed": 5}
    whole = client.completions.create(**args).choices[0]
    chunks = list(client.completions.create(**args, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.text
    assert [c.choices[0].finish_reason for c in chunks][-1] == whole.finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_stream_reports_usage_when_asked(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="any", prompt="Hi", max_tokens=3, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_stop_ends_the_completion(client: openai.OpenAI) -> None:
    full = client.completions.create(model="any", prompt="A", max_tokens=20, temperature=0).choices[0].text
    stop = full[4:7]
    cut = client.completions.create(model="any", prompt="A", max_tokens=20, temperature=0, stop=[stop]).choices[0]
    assert cut.text == full[:full.index(stop)] and cut.finish_reason == "stop"


def test_errors_reach_the_client_as_messages(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens is 41; this server generates at most 40"):
        client.completions.create(model="any", prompt="x", max_tokens=41)
    with pytest.raises(openai.UnprocessableEntityError, match="presence_penalty is not supported"):
        client.completions.create(model="any", prompt="x", presence_penalty=0.5)
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client.completions.create(model="any", prompt="x", temperature=3)
