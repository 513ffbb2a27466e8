"""The loss view (the Training page's "how surprised is the model"): each token's loss in a text, on the
loaded model or on a model server, and where a repeated stretch gets cheaper the second time."""

from __future__ import annotations

import math

from app import copying
from app import schemas as s
from app.copying import READS_LINES
from app.engine import Engine, InputError
from app.sources import LocalSource, RemoteSource, Source
from app.templating import or_message
from model import incontext

MIN_REPEATS = 4  # repeated tokens before the page points the drop in loss out


async def loss_context(engine: Engine, text: str) -> dict:
    """Each token's loss, scoring at most what the context holds (from <|endoftext|>, so the first counts)."""
    ids = await engine.encode(text)
    room = engine.info().n_ctx - 1
    r = await engine.score(s.ScoreRequest(ids=ids[:room], prepend_eos=True))
    worst = sorted(r.predictions, key=lambda p: p.loss, reverse=True)[:5]
    repeated = incontext.repeats([engine.start_id, *ids[:room]], [p.loss for p in r.predictions])
    return {"score": r, "n_tokens": len(ids), "truncated": len(ids) > room, "room": room, "worst": worst,
            "repeated": repeated if repeated and repeated["tokens"] >= MIN_REPEATS else None,
            "read_back": READS_LINES, "induction": (await copying.facts(engine)).induction,
            "uniform": math.log(engine.info().vocab_size)}


async def remote_loss_context(source: RemoteSource, text: str) -> dict:
    """Each token's loss as the model server reports it (its own tokenizer; the first token is not scored)."""
    scores, note = await source.score(text)
    if not scores:
        raise InputError("The model server scored no token of this text: the first token has nothing before it, "
                         "so type a longer text")
    mean = sum(t.loss for t in scores) / len(scores)
    return {"scores": scores, "mean_loss": mean, "perplexity": math.exp(mean) if mean < 700 else math.inf,
            "worst": sorted(scores, key=lambda t: t.loss, reverse=True)[:5], "source": source, "note": note}


async def try_source_loss(source: Source, text: str) -> dict:
    """The loss view of the model a page chose: the partial to render and its context."""
    local = isinstance(source, LocalSource)
    view = "partials/_loss.html" if local else "partials/_source_loss.html"
    if not text.strip():
        return {"view": view, "error": "Type or paste some text above to see how surprised the model is by each token.",
                "kind": "info"}
    work = loss_context(source.engine, text) if local else remote_loss_context(source, text)
    return {"view": view, **await or_message(work)}
