"""What the API answers: each route's response, the events of a generation stream, and the error body every
refusal shares.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


# ---- errors ----

class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ApiError(BaseModel):
    message: str = Field(description="what was wrong and what is allowed, as a sentence")
    detail: list[ErrorItem] | None = Field(None, description="each field that failed validation")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"message": "prompt is 1,300 tokens; this model reads at most 1,024.", "detail": None}]})


def error_responses(model: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """The error responses a route documents, all with the same body shape."""
    meaning = {413: "too large: body, text or selection", 415: "not JSON", 422: "invalid input",
               503: "the server is busy; try again shortly"}
    return {c: {"model": model, "description": meaning[c]} for c in codes}


# ---- model ----

class CardSummary(BaseModel):
    description: str | None = None
    training_tokens: int | None = None
    training_steps: int | None = None
    validation_loss: float | None = Field(None, description="nats per token on held-out text")
    baselines: dict[str, float] = Field(default_factory=dict, description="losses of trivial predictors, for scale")
    corpus: list[str] = Field(default_factory=list, description="the training data's sources")
    licences: dict[str, str] = Field(default_factory=dict)


class ModelInfo(BaseModel):
    name: str
    source: str = Field(description="the hub name, or the directory the model was read from")
    parameters: dict[str, int] = Field(description="parameter count by part, and the total")
    n_layer: int
    n_head: int
    n_embd: int = Field(description="the width of the residual stream")
    n_ctx: int = Field(description="the longest sequence the model reads, in tokens")
    vocab_size: int = Field(description="rows of the token embedding (the tokenizer may use fewer)")
    dtype: str
    card: CardSummary | None = Field(description="the model card's summary, when the checkpoint has one")
    model_type: str = Field("gpt2", description="the architecture: gpt2, llama, qwen2 or mistral")
    n_kv_head: int = Field(description="key/value heads per block; fewer than n_head when query heads share them")
    head_dim: int = Field(description="numbers per head")
    n_inner: int = Field(description="the MLP's hidden width")
    positions: Literal["learned", "rotary"] = Field(
        description="learned: a position table added to the stream; rotary: rotations inside attention")
    norm: Literal["layernorm", "rmsnorm"]
    mlp: Literal["gelu", "swiglu"]
    tied_head: bool = Field(description="the lm head is the token embedding (no parameters of its own)")
    final_norm: int = Field(description="parameters of the final norm (part of parameters.layer_norm)")
    tokenizer_vocab_size: int = Field(description="the tokens the tokenizer knows")
    weights_note: str | None = Field(None, description="for a GGUF file: how it stored the weights (Q4_1...) and "
                                                       "what was done to them, in a sentence")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "deepdive-tiny", "source": "/models/deepdive-tiny",
        "parameters": {"token_embedding": 12865792, "position_embedding": 65536, "attention": 1579008,
                       "mlp": 3151872, "layer_norm": 6656, "total": 17668864},
        "n_layer": 6, "n_head": 8, "n_embd": 256, "n_ctx": 256, "vocab_size": 50257, "dtype": "float32",
        "model_type": "gpt2", "n_kv_head": 8, "head_dim": 32, "n_inner": 1024, "positions": "learned",
        "norm": "layernorm", "mlp": "gelu", "tied_head": True, "final_norm": 512, "tokenizer_vocab_size": 50257,
        "card": {"description": "A small GPT-2 trained on children's stories.", "validation_loss": 2.1}}]})


# ---- tokens ----

class TokenOut(BaseModel):
    id: int
    text: str = Field(description="the token's bytes as text; bytes of a split character shown as \\x escapes")
    bytes: list[int] = Field(description="the token's UTF-8 bytes")
    partial: bool = Field(description="true when the token holds only part of a character")


class SpanToken(TokenOut):
    start: int = Field(description="first character of the input this token covers")
    end: int = Field(description="one past its last character (start == end: it only continues a character)")


class Counts(BaseModel):
    characters: int
    bytes: int = Field(description="UTF-8 bytes")
    tokens: int
    characters_per_token: float


class TokenizeResponse(BaseModel):
    tokens: list[SpanToken]
    counts: Counts

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "tokens": [{"id": 15496, "text": "Hello", "bytes": [72, 101, 108, 108, 111], "partial": False,
                    "start": 0, "end": 5},
                   {"id": 995, "text": " world", "bytes": [32, 119, 111, 114, 108, 100], "partial": False,
                    "start": 5, "end": 11}],
        "counts": {"characters": 11, "bytes": 11, "tokens": 2, "characters_per_token": 5.5}}]})


class DetokenizeResponse(BaseModel):
    text: str = Field(description="the decoded text; bytes that form no character become U+FFFD")
    tokens: list[TokenOut]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "text": "Hello world", "tokens": [
            {"id": 15496, "text": "Hello", "bytes": [72, 101, 108, 108, 111], "partial": False},
            {"id": 995, "text": " world", "bytes": [32, 119, 111, 114, 108, 100], "partial": False}]}]})


class Piece(BaseModel):
    id: int
    text: str


class Change(BaseModel):
    pretoken: int = Field(description="index into pretokens")
    symbols: list[int] = Field(description="that pretoken's token ids after this step")


class MergeStep(BaseModel):
    step: int
    token_id: int = Field(description="the merged token, which is also the merge's rank (lower = learned earlier)")
    left: str
    right: str
    merged: str
    count: int = Field(description="how many times the merge was applied in this step")
    changes: list[Change] = Field(description="only the pretokens this step changed")


class BpeResponse(BaseModel):
    pretokens: list[str] = Field(description="the pieces the regex splits the text into; merges stay inside one")
    initial: list[list[int]] = Field(description="each pretoken's bytes, as the ids of the byte tokens")
    steps: list[MergeStep]
    tokens: list[int] = Field(description="the final tokens: the same as /api/tokenize")
    pieces: list[Piece] = Field(description="the text of every id that appears above")


class VocabEntryOut(TokenOut):
    pass


class VocabPage(BaseModel):
    query: str
    total: int = Field(description="how many entries match")
    offset: int
    limit: int
    items: list[VocabEntryOut]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "query": "ing", "total": 2365, "offset": 0, "limit": 2,
        "items": [{"id": 278, "text": "ing", "bytes": [105, 110, 103], "partial": False},
                  {"id": 654, "text": "ings", "bytes": [105, 110, 103, 115], "partial": False}]}]})


# ---- next token ----

class Candidate(BaseModel):
    id: int
    text: str
    prob: float
    logit: float


class Target(BaseModel):
    id: int
    text: str
    rank: int = Field(description="1 = the model's most likely token")
    prob: float
    logit: float
    rank_after: int | None = Field(description="rank after the warpers; null when they removed it")
    prob_after: float


class NextTokenResponse(BaseModel):
    prompt_tokens: int
    before: list[Candidate] = Field(description="the model's own top-n")
    after: list[Candidate] = Field(description="top-n after temperature, top-k and top-p (warped logits)")
    mass: float = Field(description="the probability `before` covers")
    entropy: float = Field(description="of the model's distribution, in nats")
    entropy_after: float = Field(description="of the warped distribution, in nats")
    support: int = Field(description="how many tokens the warpers leave possible")
    targets: list[Target]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "prompt_tokens": 5,
        "before": [{"id": 2603, "text": " mat", "prob": 0.31, "logit": 12.4},
                   {"id": 4314, "text": " floor", "prob": 0.12, "logit": 11.45}],
        "after": [{"id": 2603, "text": " mat", "prob": 0.52, "logit": 15.5},
                  {"id": 4314, "text": " floor", "prob": 0.16, "logit": 14.31}],
        "mass": 0.43, "entropy": 3.2, "entropy_after": 1.9, "support": 40,
        "targets": [{"id": 2603, "text": " mat", "rank": 1, "prob": 0.31, "logit": 12.4, "rank_after": 1,
                     "prob_after": 0.52}]}]})


# ---- score ----

class Prediction(BaseModel):
    position: int = Field(description="the token's position; it is predicted from the tokens before it")
    id: int
    text: str
    prob: float = Field(description="the probability the model gave this token")
    loss: float = Field(description="-ln prob, in nats")
    rank: int
    top_id: int = Field(description="the model's own best guess here")
    top_text: str
    top_prob: float


class ScoreResponse(BaseModel):
    tokens: list[Piece]
    predictions: list[Prediction]
    mean_loss: float = Field(description="the average loss: what training minimises")
    perplexity: float = Field(description="exp(mean_loss): as unsure as a fair choice among this many tokens")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "tokens": [{"id": 7454, "text": "Once"}, {"id": 2402, "text": " upon"}],
        "predictions": [{"position": 1, "id": 2402, "text": " upon", "prob": 0.62, "loss": 0.478, "rank": 1,
                         "top_id": 2402, "top_text": " upon", "top_prob": 0.62}],
        "mean_loss": 0.478, "perplexity": 1.61}]})


# ---- activations ----

class ResidualNorms(BaseModel):
    labels: list[str] = Field(description="the residual stream's states: after the embeddings, after each block")
    norms: list[list[float]] = Field(description="[state][position]")


class AttentionPattern(BaseModel):
    layer: int
    head: int
    pattern: list[list[float]] = Field(description="one row per chosen query position q: weights over keys 0..q")


class Neuron(BaseModel):
    neuron: int
    value: float


class LayerNeurons(BaseModel):
    layer: int
    top: list[list[Neuron]] = Field(description="[position][rank]")


class LensToken(BaseModel):
    id: int
    text: str
    prob: float


class LensState(BaseModel):
    label: str
    top: list[list[LensToken]] = Field(description="[position][rank]")


class ActivationsResponse(BaseModel):
    tokens: list[Piece]
    positions: list[int]
    residual_norms: ResidualNorms | None = None
    attention: list[AttentionPattern] | None = None
    neurons: list[LayerNeurons] | None = None
    logit_lens: list[LensState] | None = None


# ---- activation patching ----

class PatchResponse(BaseModel):
    clean_tokens: list[Piece]
    corrupted_tokens: list[Piece]
    answers: list[Piece] = Field(description="[right, wrong]")
    clean: float = Field(description="logit(right) - logit(wrong) at the clean prompt's last position")
    corrupted: float = Field(description="the same on the corrupted prompt, unpatched")
    grid: list[list[float]] = Field(
        description="[block][position]: the corrupted run's logit difference with the clean residual stream "
                    "written in where it enters that block, at that position")
    normalised: list[list[float]] = Field(
        description="(cell - corrupted) / (clean - corrupted): 1 restores the clean answer, 0 changes nothing")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "clean_tokens": [{"id": 464, "text": "The"}], "corrupted_tokens": [{"id": 464, "text": "The"}],
        "answers": [{"id": 6342, "text": " Paris"}, {"id": 10598, "text": " Rome"}],
        "clean": 2.4, "corrupted": -1.1, "grid": [[-1.1]], "normalised": [[0.0]]}]})


# ---- generation: the events of a stream ----

class TokenEvent(BaseModel):
    """data of an `event: token`: one sampled token."""

    step: int
    id: int
    text: str = Field(description="new text to append; joined, these texts are the decoded output")
    piece: str = Field(description="this token's own text, for display")
    prob: float = Field(description="its probability after the warpers: what the dice used")
    raw_prob: float = Field(description="its probability under the model's own distribution")
    entropy: float
    before: list[Candidate]
    after: list[Candidate]


class Timings(BaseModel):
    first_token_ms: float | None
    total_ms: float
    tokens_per_second: float


class DoneEvent(BaseModel):
    """data of the final `event: done`."""

    finish_reason: Literal["length", "eos", "stop", "timeout", "error"] = Field(
        description="length: max_new_tokens or the context's end; eos: the end-of-text token (GPT-2's "
                    "<|endoftext|>); stop: a stop string; "
                    "timeout: the server's time limit per request; error: see message")
    prompt_tokens: int
    completion_tokens: int
    text: str = Field(description="text held back until the end (at most a few characters); append it too")
    timings: Timings
    message: str | None = Field(None, description="what went wrong, with finish_reason \"timeout\" or \"error\"")


# ---- the live training run (app/serving/live.py)

class LivePoint(BaseModel):
    step: int
    tokens: int = Field(description="bytes seen")
    train_loss: float = Field(description="mean training loss of the steps since the point before (nats per byte)")
    val_loss: float | None = Field(description="on the held-out tenth of the text, every 50 steps and where a "
                                               "sitting ends")
    elapsed_s: float = Field(description="training time so far (a paused run's clock stands still)")
    tokens_per_s: float


class LiveSample(BaseModel):
    step: int
    text: str = Field(description="written from nothing with the same dice at every step (temperature 0.8)")


class LiveRunInfo(BaseModel):
    """The live run as the Training page shows it."""

    state: str = Field(description="training, paused or failed; `idle` when no run has started")
    why: str | None = Field(None, description="why it paused: stopped, time or steps")
    text: str | None = None
    size: str | None = None
    who: str | None = None
    parameters: int | None = None
    baselines: dict[str, float] = Field({}, description="uniform: ln 257; unigram: byte frequencies alone")
    points: list[LivePoint] = []
    samples: list[LiveSample] = []
    model: str | None = Field(None, description="the name the last sitting's weights go by as the model `live`")
