"""What the API's routes accept: every request is checked here before it reaches the engine.

Requests forbid unknown fields and non-finite numbers. Limits that depend on the
server's settings or on the loaded model (text size, context length) are
checked by the engine, which says what was too big and what is allowed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from app.schemas.fields import VOCAB, Seed, StopText, Strict, Temperature, Text, TokenId, TopK, TopP, whole_characters
from model.probes.interventions import MAX_INTERVENTIONS


class TextOrIds(Strict):
    """Input given as text (tokenized by the server) or as token ids, not both."""

    text: Text | None = Field(None, description="the input text; typed special tokens are ordinary text")
    ids: list[TokenId] | None = Field(None, description="the input as token ids, instead of text")

    @model_validator(mode="after")
    def _one_input(self) -> "TextOrIds":
        if (self.text is None) == (self.ids is None):
            raise ValueError("Give the input either as text or as ids (exactly one of the two)")
        return self


# ---- tokens ----

class TokenizeRequest(Strict):
    text: Text = Field(description="any text; special tokens typed in it (<|endoftext|>) are ordinary text",
                      examples=["Hello world! Tokenizers split text into pieces."])


class DetokenizeRequest(Strict):
    ids: list[TokenId] = Field(examples=[[15496, 995, 0]])


class BpeRequest(Strict):
    text: Text = Field(description="a short text (up to 2,000 UTF-8 bytes)", examples=["lower lowest"])


# ---- interventions ----

class InterventionIn(Strict):
    """One part of the model switched off for this request."""

    kind: Literal["head", "neuron", "attn", "mlp"] = Field(
        description="head: one attention head (a query head, alone even where heads share keys and values); "
                    "neuron: one MLP hidden unit; attn / mlp: a block's whole attention or MLP")
    block: int = Field(ge=0, le=1000, description="the block, from 0")
    index: int | None = Field(None, ge=0, le=1_000_000,
                              description="the head or the neuron, from 0; leave out for attn and mlp")
    mode: Literal["zero", "mean"] = Field(
        "zero", description="zero: write 0; mean: write its mean over the prompt's positions")


def intervention_field() -> Any:
    return Field(default_factory=list, max_length=MAX_INTERVENTIONS,
                 description=f"parts of the model to switch off for this request (at most {MAX_INTERVENTIONS}); "
                             "empty: the model as it is",
                 examples=[[{"kind": "head", "block": 1, "index": 3}, {"kind": "neuron", "block": 0, "index": 42,
                                                                       "mode": "mean"}]])


# ---- next token ----

class NextTokenRequest(TextOrIds):
    temperature: Temperature = 1.0
    top_k: TopK = 0
    top_p: TopP = 1.0
    n: int = Field(10, ge=1, le=VOCAB, description="how many of the most likely tokens to list")
    targets: list[TokenId | Annotated[str, Field(min_length=1, max_length=100), AfterValidator(whole_characters)]] = Field(
        default_factory=list, max_length=20,
        description="tokens to report on whatever their rank: ids, or texts that are exactly one token")
    interventions: list[InterventionIn] = intervention_field()

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"text": "The cat sat on the", "temperature": 0.8, "top_k": 40, "n": 5, "targets": [" mat", 3797]},
        {"text": "The cat sat on the", "n": 5, "interventions": [{"kind": "head", "block": 0, "index": 1},
                                                                {"kind": "mlp", "block": 2}]}]})


# ---- score ----

class ScoreRequest(TextOrIds):
    prepend_eos: bool = Field(False, description="start from the model's start-of-text token (GPT-2's <|endoftext|>), so the first "
                                            "token is scored too")
    interventions: list[InterventionIn] = intervention_field()

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"text": "Once upon a time there was a cat."},
        {"text": "Once upon a time there was a cat.", "interventions": [{"kind": "attn", "block": 0}]}]})


# ---- activations ----

class AttentionSelect(Strict):
    layer: int = Field(ge=0, le=1000)
    heads: list[Annotated[int, Field(ge=0, le=1000)]] | None = Field(None, max_length=1000,
                                                                     description="null means every head")


class ActivationsRequest(TextOrIds):
    positions: list[Annotated[int, Field(ge=0, le=1_000_000)]] | None = Field(
        None, max_length=100_000, description="positions to report; null means all")
    residual_norms: bool = True
    attention: list[AttentionSelect] = Field(default_factory=list, max_length=1000)
    neurons: int = Field(0, ge=0, le=50, description="top MLP neurons per layer and position; 0 for none")
    logit_lens: int = Field(0, ge=0, le=20, description="top tokens per state and position; 0 for none")
    interventions: list[InterventionIn] = intervention_field()

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"text": "The Eiffel Tower is in", "attention": [{"layer": 0, "heads": [0, 1]}], "neurons": 3,
         "logit_lens": 3},
        {"text": "The Eiffel Tower is in", "logit_lens": 3, "residual_norms": False,
         "interventions": [{"kind": "head", "block": 1, "index": 0, "mode": "mean"}]}]})


# ---- activation patching ----

Answer = TokenId | Annotated[str, Field(min_length=1, max_length=100), AfterValidator(whole_characters)]


class PatchRequest(Strict):
    clean: Text = Field(description="the prompt whose residual stream is patched in")
    corrupted: Text = Field(description="the prompt that is run, with the same number of tokens as clean")
    answers: list[Answer] = Field(min_length=2, max_length=2,
                                  description="[right, wrong]: two tokens, as texts of exactly one token or ids; "
                                              "the grid shows logit(right) - logit(wrong)")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"clean": "When Mary and John went to the store, John gave a drink to",
         "corrupted": "When Mary and John went to the store, Mary gave a drink to", "answers": [" Mary", " John"]},
        {"clean": "The Eiffel Tower is in the city of", "corrupted": "The Colosseum is in the city of",
         "answers": [" Paris", " Rome"]}]})


# ---- generation ----

class GenerateRequest(Strict):
    prompt: Text = Field("", description="the text to continue; empty starts from the start-of-text token "
                                       "(GPT-2's <|endoftext|>)")
    max_new_tokens: int = Field(64, ge=1, description="at most this many tokens (capped by the server's limit, "
                                                      "and by the context: generation ends with reason "
                                                      "\"length\" at the context's end)")
    temperature: Temperature = 1.0
    top_k: TopK = 0
    top_p: TopP = 1.0
    seed: Seed | None = None
    stop: list[StopText] = Field(default_factory=list, max_length=8,
                                 description="generation ends before the first of these texts")
    n_top: int = Field(5, ge=0, le=20, description="alternatives listed with each token")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"prompt": "Once upon a time", "max_new_tokens": 32, "temperature": 0.8, "top_k": 40, "seed": 1,
         "stop": ["\n\n"]}]})
