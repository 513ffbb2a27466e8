"""HTML pages and the htmx partials they swap in.

Every page renders its partial with a default (or URL-given) input; the matching
/partials/* endpoint renders the same template for new input. Numbers come from
the same Engine methods the JSON API uses.

Partials always answer 200: a problem with the input (empty, too long, the model
busy) comes back as a message box in place of the result, because htmx does
not swap non-2xx answers. (static/js/deepdive.js still explains any non-2xx
answer, such as a 413 for an oversized body, in the target.)

Rendering (filters, the stage order) is app/templating.py; the example texts
and presets are app/demo.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from app import copying
from app.demo import (
    DEFAULT_LOSS_TEXT,
    DEFAULT_PLAYGROUND_PROMPT,
    DEFAULT_TOKENIZER_TEXT,
    LOSS_EXAMPLES,
    PLAYGROUND_PRESETS,
    SAMPLE_FILES,
)
from app.deps import EngineDep
from app.engine import Engine, InputError
from app.figures import line_chart
from app.errors import require_json
from app.loss import try_loss
from app.sources import GenerateRequest, Source, Sources, SourcesDep, as_sse
from app.streaming import EventStream
from app.security import ModelTurn
from app.templating import (
    LOSS_LEGEND,
    ROOT,
    STOPS,
    Text,
    flag,
    message,
    partial,
    query_number,
    render,
)
from model.tokenizers import encodings
from model.training.corpus import documents
from model.tokenizers.hf_tokenizer import HFTokenizer
from model.tokenizers.tokenizer import Tokenizer
from model.training.training_log import evaluations, finite, other_sources, read_training_log

SAMPLES = ROOT / "model" / "samples"

router = APIRouter(include_in_schema=False)


# What each view shows at most: enough to read, small enough to stay quick while typing.
MAX_CHIPS = 3000          # chips drawn for one text (the counts still cover all of it)
MAX_COMPARE_CHIPS = 1500  # chips per vocabulary in the comparison
BPE_CHARS = 200           # the merge story covers this many characters
MAX_BPE_STEP = 4 * BPE_CHARS  # no more merges than bytes: at most 4 a character
VOCAB_PAGE = 30
DATA_TOKENS = 400         # tokens of the training stream on the data page
SPECIALS_SHOWN = 8        # special tokens the tokenizer page names (Llama 3 has 256, mostly reserved)



# ---------------------------------------------------------------- overview

@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, engine: EngineDep):
    return render(request, "overview.html", "overview", info=engine.info(), copying=await copying.facts(engine))


# ---------------------------------------------------------------- pre-training data

@dataclass(frozen=True)
class SampleStats:
    name: str
    what: str
    documents: int
    characters: int
    tokens: int


_sample_cache: dict[tuple[Tokenizer | HFTokenizer, str], SampleStats] = {}  # by tokenizer and sample


def count_sample(tokenizer: Tokenizer | HFTokenizer, name: str, what: str) -> SampleStats:
    """A committed sample counted as training counts it: each document followed by one end-of-text token."""
    docs = documents(SAMPLES / name)
    tokens = sum(len(tokenizer.encode(d)) + 1 for d in docs)
    return SampleStats(name, what, len(docs), sum(map(len, docs)), tokens)


async def sample_stats(engine: Engine) -> list[SampleStats]:
    # server files, not user input: the engine's tokenizer, without the request size limit; counted once
    for name, what in SAMPLE_FILES:
        if (engine.tokenizer, name) not in _sample_cache:
            _sample_cache[engine.tokenizer, name] = await anyio.to_thread.run_sync(count_sample, engine.tokenizer,
                                                                                   name, what)
    return [_sample_cache[engine.tokenizer, name] for name, _ in SAMPLE_FILES]


@lru_cache(maxsize=1)
def training_stream(tokenizer: Tokenizer | HFTokenizer, n_tokens: int) -> list[dict]:
    """The first n_tokens of the training sample as the network sees it: documents joined by the end-of-text
    token (GPT-2's <|endoftext|>; nothing where the tokenizer names none)."""
    stream: list[dict] = []
    eot = tokenizer.eos_id
    for doc in documents(SAMPLES / "tinystories_train.txt"):
        stream += [{"id": t.id, "text": t.text, "eot": False} for t in tokenizer.tokens(doc)]
        if eot is not None:
            stream.append({"id": eot, "text": tokenizer.lookup(eot).text, "eot": True})
        if len(stream) >= n_tokens:
            break
    return stream[:n_tokens]


def natural_points(evals: list[dict]) -> list[list[float]]:
    """The training loss on natural-text rows only, where the log has it (`train_loss_natural`)."""
    return [[r["tokens"], r["train_loss_natural"]] for r in evals if finite(r.get("train_loss_natural"))]


def stage_starts(records: list[dict], stages: tuple) -> list[dict]:
    """Where each training stage after the first began, in tokens seen: from the card's steps per stage
    and the log's record of the step the stage started from. Where a stage's mixture changed and the log
    has no natural-text training loss to plot, the label says why the training loss jumps there: the rows
    it is measured on changed, not what the model knows."""
    marks, step = [], 0
    plain = not natural_points(evaluations(records))
    for i, (before, st) in enumerate(zip(stages, stages[1:]), 2):
        step += before.steps
        at = next((r["tokens"] for r in records if r.get("step") == step and finite(r.get("tokens"))), None)
        if at is not None:
            new_mix = plain and st.weights != before.weights
            marks.append({"x": at, "label": f"stage {i}" + (": new mix, loss jumps" if new_mix else ""),
                          "step": step, "class": "stage"})
    return marks


def phase_starts(evals: list[dict]) -> list[dict]:
    """Where the log's evaluations change `phase` (a stage trained in phases, such as "A" then "B"): a mark for
    each change, labelled like the stages'. Logs without phases have none."""
    marks, last = [], None
    for r in evals:
        phase = r.get("phase")
        if isinstance(phase, str) and phase:
            if last is not None and phase != last:
                marks.append({"x": r["tokens"], "label": f"phase {phase}", "step": r["step"], "class": "phase"})
            last = phase
    return marks


def curve_spec(evals: list[dict], marks: list[dict]) -> dict | None:
    """The training curve: train and validation loss against tokens seen, and where each training stage (and
    phase) began, as the series (each with its own style, `class`, and legend key, `key`) and the chart's
    geometry (app/figures.py line_chart), which templates/data.html draws as SVG."""
    if not evals:
        return None
    series = [
        {"label": "training loss", "class": "s-train", "key": "train",
         "points": [[r["tokens"], r["train_loss"]] for r in evals if finite(r.get("train_loss"))]},
        {"label": "validation loss (held-out stories)", "class": "s-val", "key": "val", "dots": True,
         "points": [[r["tokens"], r["val_loss"]] for r in evals]},
    ]
    natural = natural_points(evals)
    if natural:  # the mixture's synthetic rows score differently: this line is the learning alone
        series.append({"label": "training loss (natural text only)", "class": "s-natural", "key": "natural",
                       "points": natural})
    # other validation sources (such as the books), each its own dashed style; the main one is already drawn
    series += [{"label": f"validation loss ({name})", "class": f"s-extra s-extra-{i % 3 + 1}",
                "key": f"extra-{i % 3 + 1}", "points": points}
               for i, (name, points) in enumerate(other_sources(evals).items())]
    return {"series": series, "chart": line_chart(series, sorted(marks + phase_starts(evals), key=lambda m: m["x"]),
                                                  "tokens seen", "loss (nats per token)")}


def checkpoint_samples(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        samples = r.get("samples")
        if isinstance(samples, dict) and samples:
            out.append({"step": r["step"], "tokens": r.get("tokens"), "val_loss": r.get("val_loss"),
                        "samples": [(str(p), str(t)) for p, t in samples.items()]})
    return out


@router.get("/data", response_class=HTMLResponse)
async def data(request: Request, engine: EngineDep):
    records = read_training_log(engine.loaded.path / "training_log.jsonl")
    card = engine.loaded.card
    corpus = card.corpus if card else ()
    weights = sum(c.weight for c in corpus if c.weight is not None)
    evals = evaluations(records or [])
    marks = stage_starts(records or [], card.stages if card else ())
    checkpoints = checkpoint_samples(records or [])
    return render(request, "data.html", "data",
                  stream=training_stream(engine.tokenizer, DATA_TOKENS), samples=await sample_stats(engine),
                  corpus=corpus, weights=weights, records=records, curve=curve_spec(evals, marks), evals=evals,
                  marks=marks, checkpoints=checkpoints, card=card, info=engine.info(),
                  below=[r for r in evals if finite(r.get("train_loss")) and r["val_loss"] < r["train_loss"]])


# ---------------------------------------------------------------- tokenizer

async def tokens_context(engine: Engine, text: str) -> dict:
    r = await engine.tokenize(text)
    return {"tokens": r.tokens[:MAX_CHIPS], "counts": r.counts, "specials": engine.special_ids}


@router.get("/tokenizer", response_class=HTMLResponse)
async def tokenizer(request: Request, engine: EngineDep, text: str = DEFAULT_TOKENIZER_TEXT, ids: str | None = None,
                    ws: str | None = None, q: str = " the", vpage: Annotated[int, Query(ge=1)] = 1):
    try:
        result = await tokens_context(engine, text)
    except InputError as e:
        result = {"error": f"That text is too long to show: {e}."}
    # the merge story opens at a link's step (?bpe=K); the server hands it to the story's first request
    bpe_step = int(query_number(request, "bpe", 0, 0, MAX_BPE_STEP))
    return render(request, "tokenizer.html", "tokenizer", text=text, show_ids=flag(ids, False),
                  show_ws=flag(ws, True), default_text=DEFAULT_TOKENIZER_TEXT, bpe_chars=BPE_CHARS, bpe_step=bpe_step,
                  tok=tokenizer_facts(engine), **result | await vocab_context(engine, q[:100], vpage))


def tokenizer_facts(engine: Engine) -> dict:
    """What the Tokenizer page says about the loaded model's tokenizer: GPT-2's, or the checkpoint's own."""
    own = engine.own_tokenizer
    specials = sorted(engine.special_ids - engine.unused)
    return {"gpt2": own is None, "name": engine.info().name, "vocab_size": engine.tokenizer.vocab_size,
            "byte_level": own is None or own.byte_level, "byte_fallback": own is not None and own.byte_fallback,
            "specials": [{"id": i, "text": engine.texts[i]} for i in specials[:SPECIALS_SHOWN]],
            "more_specials": max(0, len(specials) - SPECIALS_SHOWN),
            "eos": None if engine.eos_id is None else engine.texts[engine.eos_id],
            "start": None if engine.start_id is None else engine.texts[engine.start_id]}


@router.post("/partials/tokens", response_class=HTMLResponse)
async def tokens_partial(request: Request, engine: EngineDep, text: Text = ""):
    if not text:
        return message(request, "Type or paste some text above to see its tokens.", "info")
    try:
        return partial(request, "partials/_tokens.html", **await tokens_context(engine, text))
    except InputError as e:
        return message(request, f"That text is too long to show: {e}.")


@router.post("/partials/bpe", response_class=HTMLResponse)
async def bpe_partial(request: Request, engine: EngineDep, text: Text = "",
                      bpe: Annotated[int, Form(ge=0, le=MAX_BPE_STEP)] = 0):
    if not text:
        return message(request, "Type some text above to watch its bytes merge into tokens.", "info")
    shown = text[:BPE_CHARS]
    try:
        history = await engine.bpe(shown)
    except InputError as e:
        return message(request, str(e))
    return partial(request, "partials/_bpe.html", history=history.model_dump(mode="json"),
                   truncated=len(text) > len(shown), bpe_chars=BPE_CHARS, tok=tokenizer_facts(engine),
                   step=min(bpe, len(history.steps)))


@router.post("/partials/compare", response_class=HTMLResponse)
async def compare_partial(request: Request, engine: EngineDep, text: Text = ""):
    if not text:
        return message(request, "Type some text above to compare vocabularies.", "info")
    try:
        engine.check_text(text)
    except InputError as e:
        return message(request, f"That text is too long to compare: {e}.")
    # building cl100k/o200k takes a second on first use: off the event loop
    rows = await anyio.to_thread.run_sync(encodings.compare, text, engine.own_tokenizer)
    most = max(r.count for r in rows) or 1
    return partial(request, "partials/_compare.html", rows=rows, most=most, max_chips=MAX_COMPARE_CHIPS,
                   own=engine.own_tokenizer is not None, specials=engine.special_ids)


async def vocab_context(engine: Engine, q: str, page: int) -> dict:
    result = await engine.vocab(q, (page - 1) * VOCAB_PAGE, VOCAB_PAGE)
    pages = max(1, math.ceil(result.total / VOCAB_PAGE))
    if page > pages:  # past the end (a stale link): show the last page
        return await vocab_context(engine, q, pages)
    return {"result": result, "q": q, "page": page, "pages": pages, "specials": engine.special_ids}


@router.get("/partials/vocab", response_class=HTMLResponse)
async def vocab_partial(request: Request, engine: EngineDep, q: str = "", page: Annotated[int, Query(ge=1, le=100_000)] = 1):
    if len(q) > 100:
        return message(request, "Search for at most 100 characters: no token is longer than that.")
    return partial(request, "partials/_vocab.html", **await vocab_context(engine, q, page))


# ---------------------------------------------------------------- loss (training)

def models_of(sources: Sources, source: Source) -> dict:
    """The model chooser's context, on a server with more than one model."""
    return {"model_choices": sources.choices(), "model_key": source.key, "compare_key": ""} if len(sources) > 1 else {}


@router.get("/loss", dependencies=[ModelTurn], response_class=HTMLResponse)
async def loss(request: Request, engine: EngineDep, sources: SourcesDep, text: str = DEFAULT_LOSS_TEXT,
               model: str = ""):
    source = sources.get(model)
    result = await try_loss(source, text)
    return render(request, "loss.html", "loss", text=text, examples=LOSS_EXAMPLES, legend=LOSS_LEGEND,
                  default_text=DEFAULT_LOSS_TEXT, info=engine.info(), source=source, **models_of(sources, source),
                  **result)


@router.post("/partials/loss", dependencies=[ModelTurn], response_class=HTMLResponse)
async def loss_partial(request: Request, sources: SourcesDep, text: Text = "", model: Text = ""):
    result = await try_loss(sources.get(model), text)
    if "error" in result:
        return message(request, result["error"], result["kind"])
    return partial(request, "partials/_loss.html", legend=LOSS_LEGEND, **result)


# ---------------------------------------------------------------- playground
# The Playground streams in the browser (static/js/playground.js reads Server-Sent Events); the server
# renders the controls with the URL's settings, so a prepared demo is a link. Internals and Inference
# are app/routes/internals.py and app/routes/inference.py.

PLAYGROUND_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 1.0, "max_new_tokens": 80}
COMPARE_TEMPERATURES = (0.0, 0.7, 1.0, 1.5)


@router.post("/playground/generate", dependencies=[Depends(require_json), ModelTurn])
async def playground_generate(req: GenerateRequest, sources: SourcesDep) -> Response:
    """The Playground's stream from the model it chose: /api/generate's events, from any source."""
    stream = await sources.get(req.model).generate(req)
    return EventStream(stream, as_sse(stream))


@router.get("/playground", response_class=HTMLResponse)
async def playground(request: Request, engine: EngineDep, sources: SourcesDep, prompt: str = DEFAULT_PLAYGROUND_PROMPT,
                     seed: str = "", stop: str = "none", preset: str = "", model: str = "", compare: str = ""):
    d = PLAYGROUND_DEFAULTS
    chosen = next((p for p in PLAYGROUND_PRESETS if p["key"] == preset), None)
    cap = request.app.state.settings.max_new_tokens
    # the presets are labelled for the model chosen (a local one; a remote one keeps the main model's labels)
    source = sources.get(model)
    labelled = source.engine or engine
    # a model here whose file has a chat template: the chat preset says what post-training did to it
    instruct = next((src.name for src in sources.all.values()
                     if src.engine is not None and src.engine.tokenizer.chat_template), None)
    return render(request, "playground.html", "playground", info=engine.info(), prompt=prompt,
                  labelled=labelled.info(), instruct=instruct,
                  labelled_copying=labelled.loaded.card.copying if labelled.loaded.card else None,
                  default_prompt=DEFAULT_PLAYGROUND_PROMPT, defaults=d, presets=PLAYGROUND_PRESETS,
                  stops=STOPS, stop=stop if stop in {k for k, _, _ in STOPS} else "none",
                  compare=COMPARE_TEMPERATURES, max_cap=cap, legend=LOSS_LEGEND, preset=chosen,
                  copying=engine.loaded.card.copying if engine.loaded.card else None,
                  seed=seed if seed.isdigit() and len(seed) <= 9 else "",
                  **models_of(sources, sources.get(model)) | playground_compare(sources, model, compare),
                  temperature=query_number(request, "temperature", d["temperature"], 0, 2),
                  top_k=int(query_number(request, "top_k", d["top_k"], 0, 100)),
                  top_p=query_number(request, "top_p", d["top_p"], 0.05, 1),
                  max_new_tokens=int(query_number(request, "max_new_tokens", min(d["max_new_tokens"], cap), 1, cap)))


def playground_compare(sources: Sources, model: str, compare: str) -> dict:
    other = sources.other(compare, sources.get(model))
    return {"compare_key": other.key if other else ""} if len(sources) > 1 else {}
