"""The JSON shapes of the API: every request checked here before it reaches the engine.

Requests forbid unknown fields and non-finite numbers. Limits that depend on the
server's settings or on the loaded model (text size, context length) are
checked by the engine, which says what was too big and what is allowed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from model.probes.interventions import MAX_INTERVENTIONS

# above every loaded model's vocabulary (GPT-2's 50,257, Llama 3's 128,256, Qwen2's 151,936): the engine
# checks ids against the loaded model's own and says its range
VOCAB = 262_144


def whole_characters(text: str) -> str:
    """JSON can spell a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 text holds: make it U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


Text = Annotated[str, AfterValidator(whole_characters)]

TokenId = Annotated[int, Field(ge=0, lt=VOCAB, description="a token id of the loaded model (GPT-2: 0 to 50,256)")]
Prob = Annotated[float, Field(ge=0, le=1)]
Temperature = Annotated[float, Field(ge=0, le=10, allow_inf_nan=False,
                                     description="divides the logits: below 1 sharpens, above 1 flattens; 0 is greedy")]
TopK = Annotated[int, Field(ge=0, le=VOCAB, description="keep the k most likely tokens; 0 keeps all")]
# from 1e-6: the cut compares in float32, where a smaller p is 0 and would keep nothing
TopP = Annotated[float, Field(ge=1e-6, le=1, allow_inf_nan=False,
                              description="keep the fewest most likely tokens whose probability reaches p "
                                          "(0.000001 to 1; 1 keeps all)")]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1, description="makes sampling repeatable")]
StopText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(whole_characters)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextOrIds(Strict):
    """Input given as text (tokenized by the server) or as token ids, not both."""

    text: Text | None = Field(None, description="the input text; typed special tokens are ordinary text")
    ids: list[TokenId] | None = Field(None, description="the input as token ids, instead of text")

    @model_validator(mode="after")
    def _one_input(self) -> "TextOrIds":
        if (self.text is None) == (self.ids is None):
            raise ValueError("Give the input either as text or as ids (exactly one of the two)")
        return self


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


class TokenizeRequest(Strict):
    text: Text = Field(description="any text; special tokens typed in it (<|endoftext|>) are ordinary text",
                      examples=["Hello world! Tokenizers split text into pieces."])


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


class DetokenizeRequest(Strict):
    ids: list[TokenId] = Field(examples=[[15496, 995, 0]])


class DetokenizeResponse(BaseModel):
    text: str = Field(description="the decoded text; bytes that form no character become U+FFFD")
    tokens: list[TokenOut]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "text": "Hello world", "tokens": [
            {"id": 15496, "text": "Hello", "bytes": [72, 101, 108, 108, 111], "partial": False},
            {"id": 995, "text": " world", "bytes": [32, 119, 111, 114, 108, 100], "partial": False}]}]})


class BpeRequest(Strict):
    text: Text = Field(description="a short text (up to 2,000 UTF-8 bytes)", examples=["lower lowest"])


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

class ScoreRequest(TextOrIds):
    prepend_eos: bool = Field(False, description="start from the model's start-of-text token (GPT-2's <|endoftext|>), so the first "
                                            "token is scored too")
    interventions: list[InterventionIn] = intervention_field()

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"text": "Once upon a time there was a cat."},
        {"text": "Once upon a time there was a cat.", "interventions": [{"kind": "attn", "block": 0}]}]})


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


def error_responses(model: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """The error responses a route documents, all with the same body shape."""
    meaning = {413: "too large: body, text or selection", 415: "not JSON", 422: "invalid input",
               503: "the server is busy; try again shortly"}
    return {c: {"model": model, "description": meaning[c]} for c in codes}
