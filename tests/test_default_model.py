"""The shipped default model: it loads everywhere and its card tells the truth."""

from __future__ import annotations

import json

import pytest
import torch

from app.config import DEFAULT_MODEL, Settings
from app.views.copying import CopyingFacts
from app.demo import MEASURED, PLAYGROUND_PRESETS, lacking
from app.pages.internals import head_hint
from model.probes import incontext
from model.training.card import HELD_OUT_SAMPLE, sample_tokens
from model.decode.generate import generate
from model.loading import load_model, read_card
from model.model_card import percent
from model.decode.sampling import SamplingParams
from model.tokenizers.tokenizer import EOT_ID, gpt2_encoding
from model.training.train import token_loss


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
    assert card["training"]["command"].startswith("python -m model.training.train")
    # the stages add up to the run the log records, and the mixture shares to one
    assert sum(st["steps"] for st in card["training"]["stages"]) == card["training"]["steps"]
    assert sum(c["weight"] for c in card["corpus"].values()) == pytest.approx(1, abs=0.002)
    assert "CDLA-Sharing-1.0" in card["licences"]["tinystories"]
    assert isinstance(card["transformations"], list)  # every change made to the text is listed


# ---------------------------------------------------------------- in-context copying

@pytest.fixture(scope="module")
def measured(loaded):
    return incontext.measure(loaded.model)


def test_incontext_figures_match_the_card(measured, card):
    ic = card["incontext"]
    for key in ("first_copy", "second_copy", "second_copy_all_words", "name_first_use", "name_later_uses"):
        assert measured[key] == pytest.approx(ic[key], abs=0.1), key
    for key in ("previous_token_head", "induction_head", "first_token_head"):
        assert measured[key]["head"] == ic[key]["head"], key
        assert measured[key]["score"] == pytest.approx(ic[key]["score"], abs=0.1), key


def test_the_internals_hint_names_the_heads_the_finder_shows(loaded):
    """The hint quotes the finder's own probe (random words said twice, one text), not the card's."""
    probe = loaded.tokenizer.encode(incontext.probe_words(40))  # as the finder encodes it: no start token
    rows = incontext.ranked_heads(incontext.head_scores(loaded.model, [probe]))
    hint = head_hint(CopyingFacts(None, rows, PARAMETERS))
    for key in ("previous_token", "induction"):
        best = max(rows, key=lambda r: r[key])
        assert f"block {best['layer']}, head {best['head']}" in hint
        assert percent(best[key]) in hint


EXPECTED = {  # what each preset that works on this model writes at temperature 0
    "Once upon a time": lambda text: len(text.split()) >= 8 and "." in text,
    "Tom and his dog": lambda text: len(text.split()) >= 8 and "." in text,
    "An invented name": lambda text: "Brimlo" in text,
    "A repeated refrain": lambda text: text.startswith(" hush, hush, hush."),
    "A list": lambda text: text.startswith(" a ") and len(text.split()) in (2, 3, 4),
}


SHIPPED = read_card(DEFAULT_MODEL)
PARAMETERS = json.loads((DEFAULT_MODEL / "model_card.json").read_text())["parameters"]["total"]


@pytest.mark.parametrize("preset", [p for p in PLAYGROUND_PRESETS if not lacking(p, SHIPPED.copying, PARAMETERS)],
                         ids=lambda p: p["label"])
def test_presets_that_work_here_do_what_their_label_says(loaded, preset):
    text = greedy(loaded, preset)
    assert EXPECTED[preset["label"]](text), text


def greedy(loaded, preset: dict) -> str:
    """What the model writes for the preset at temperature 0, as the Playground shows it (its stop text applied)."""
    enc = gpt2_encoding()
    ids = []
    for step in generate(loaded.model, enc.encode_ordinary(preset["prompt"]), SamplingParams(temperature=0),
                         preset["max_new_tokens"], seed=0):
        if step.id == EOT_ID:
            break
        ids.append(step.id)
    text = enc.decode(ids)
    return text.split("\n")[0] if preset["stop"] == "line" else text


@pytest.mark.parametrize("preset", [p for p in PLAYGROUND_PRESETS if p["key"] in MEASURED["deepdive-tiny"]],
                         ids=lambda p: p["label"])
def test_each_preset_note_quotes_what_this_model_writes(loaded, preset):
    assert loaded.name == "deepdive-tiny"  # the name the Playground looks its notes up by
    assert greedy(loaded, preset) == MEASURED["deepdive-tiny"][preset["key"]]
