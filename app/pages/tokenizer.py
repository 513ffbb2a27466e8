"""Stage 2, tokenization: text to tokens, the byte-pair merges replayed, other vocabularies compared, the vocabulary
browsed.

Partials answer 200: a problem with the input comes back as a message box in place of the result, because htmx
does not swap non-2xx answers."""

from __future__ import annotations

import math
from typing import Annotated

import anyio
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from app.demo import DEFAULT_TOKENIZER_TEXT
from app.deps import EngineDep
from app.serving.engine import Engine
from app.problems import InputError, sentence
from app.templating import Text, flag, message, partial, query_number, render
from app.views import merges
from app.views.merges import Move
from model.tokenizers import encodings

MAX_CHIPS = 3000          # chips drawn for one text (the counts still cover all of it)
MAX_COMPARE_CHIPS = 1500  # chips per vocabulary in the comparison
BPE_CHARS = 200           # the merge story covers this many characters
MAX_BPE_STEP = 4 * BPE_CHARS  # no more merges than bytes: at most 4 a character
VOCAB_PAGE = 30
SPECIALS_SHOWN = 8        # special tokens the tokenizer page names (Llama 3 has 256, mostly reserved)

router = APIRouter(include_in_schema=False)


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
    # a link's step of the merge story (?bpe=K) opens the story there
    step = int(query_number(request, "bpe", 0, 0, MAX_BPE_STEP))
    try:
        story = await bpe_context(engine, text, step) if text else {"story": None}
    except InputError as e:
        story = {"story_error": sentence(str(e))}
    return render(request, "tokenizer.html", "tokenizer", text=text, show_ids=flag(ids, False),
                  show_ws=flag(ws, True), default_text=DEFAULT_TOKENIZER_TEXT, bpe_chars=BPE_CHARS,
                  tok=tokenizer_facts(engine), **result | story | await vocab_context(engine, q[:100], vpage))


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
                      bpe: Annotated[int, Form(ge=0, le=MAX_BPE_STEP)] = 0, move: Annotated[Move | None, Form()] = None):
    if not text:
        return message(request, "Type some text above to watch its bytes merge into tokens.", "info")
    try:
        return partial(request, "partials/_bpe.html", **await bpe_context(engine, text, bpe, move), bpe_chars=BPE_CHARS,
                       tok=tokenizer_facts(engine))
    except InputError as e:
        return message(request, str(e))


async def bpe_context(engine: Engine, text: str, step: int, move: Move | None = None) -> dict:
    shown = text[:BPE_CHARS]
    history = await engine.bpe(shown)
    step, playing = merges.moved(step, len(history.steps), move)
    return {"story": merges.story(history, step, playing), "truncated": len(text) > len(shown)}


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
    return partial(request, "partials/_compare.html", rows=rows, most=most, max_chips=MAX_COMPARE_CHIPS, text=text,
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
