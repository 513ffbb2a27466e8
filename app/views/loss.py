"""The loss view (the Training page's "how surprised is the model"): each token's loss in a text, on any
model a page can choose, and where a repeated stretch gets cheaper the second time."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from app.views import copying
from app.views.copying import READS_LINES
from app.problems import InputError
from app.templating import or_message
from model.probes import incontext

if TYPE_CHECKING:
    from app.serving.sources import Source

MIN_REPEATS = 4  # repeated tokens before the page points the drop in loss out


async def loss_context(source: Source, text: str) -> dict:
    scored = await source.score(text)
    tokens = scored.tokens
    if not tokens:
        raise InputError("The model scored no token of this text: the first token has nothing before it, "
                         "so type a longer text")
    mean = sum(t.loss for t in tokens) / len(tokens)
    # a token repeats where the pair it ends came before; a first token nobody scored starts the sequence
    keys = [object(), *(t.text if t.id is None else t.id for t in tokens)]
    repeated = incontext.repeats(keys, [t.loss for t in tokens])
    return {"tokens": tokens, "note": scored.note, "mean_loss": mean, "perplexity": math.exp(mean) if mean < 700 else math.inf,
            "worst": sorted(tokens, key=lambda t: t.loss, reverse=True)[:5], "ranks": source.abilities.ranks,
            "uniform": math.log(scored.vocab_size) if scored.vocab_size else None,
            "repeated": repeated if repeated and repeated["tokens"] >= MIN_REPEATS else None, "read_back": READS_LINES,
            "induction": (await copying.facts(source.engine)).induction if source.abilities.weights else None}


async def try_loss(source: Source, text: str) -> dict:
    """The loss view of the model a page chose, or the message to show in its place."""
    if not text.strip():
        return {"error": "Type or paste some text above to see how surprised the model is by each token.",
                "kind": "info"}
    return await or_message(loss_context(source, text))
