"""The shipped default model: it loads everywhere and its card tells the truth."""

from __future__ import annotations

import json

import pytest
import torch

from app.config import DEFAULT_MODEL, Settings
from model.card import HELD_OUT_SAMPLE, sample_tokens
from model.loading import load_model
from model.tokenizer import gpt2_encoding
from model.train import token_loss


@pytest.fixture(scope="module")
def loaded():
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def card():
    return json.loads((DEFAULT_MODEL / "model_card.json").read_text())


def test_it_is_what_the_app_loads_without_configuration(monkeypatch):
    monkeypatch.delenv("DEEPDIVE_MODEL", raising=False)
    assert Settings().model == str(DEFAULT_MODEL)
    assert (DEFAULT_MODEL / "config.json").exists() and (DEFAULT_MODEL / "model.safetensors").exists()
    assert (DEFAULT_MODEL / "training_log.jsonl").exists() and (DEFAULT_MODEL / "README.md").exists()


def test_small_enough_to_ship():
    assert (DEFAULT_MODEL / "model.safetensors").stat().st_size <= 60 * 2**20


def test_transformers_reads_it_and_agrees(loaded):
    transformers = pytest.importorskip("transformers")
    ref = transformers.GPT2LMHeadModel.from_pretrained(DEFAULT_MODEL, dtype=torch.float32).eval()
    ids = torch.tensor([gpt2_encoding().encode_ordinary("Once upon a time, there was a little")])
    with torch.no_grad():
        ours = loaded.model(ids)
        theirs = ref(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_held_out_loss_matches_the_card(loaded, card):
    ids = sample_tokens(HELD_OUT_SAMPLE)
    measured = card["evaluation"]["held_out_sample"]
    assert len(ids) == measured["tokens"]
    with torch.inference_mode():
        loss = token_loss(loaded.model, ids)
    assert loss == pytest.approx(measured["loss"], abs=0.05)
    # and it has learned something: far below the unigram baseline
    assert loss < card["evaluation"]["baselines"]["unigram"] - 1.0


def test_card_states_what_it_is(card):
    assert "not OpenAI's GPT-2" in card["description"]
    assert card["parameters"]["total"] == sum(v for k, v in card["parameters"].items() if k != "total")
    assert card["training"]["command"].startswith("python -m model.train")
    # the stages add up to the run the log records, and the mixture shares to one
    assert sum(st["steps"] for st in card["training"]["stages"]) == card["training"]["steps"]
    assert sum(c["weight"] for c in card["corpus"].values()) == pytest.approx(1, abs=0.002)
    assert "CDLA-Sharing-1.0" in card["licences"]["tinystories"]
