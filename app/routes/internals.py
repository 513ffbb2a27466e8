"""The internals page: the architecture, and one forward pass of a prompt, rendered on the server where it can be.

The page and /partials/forward render the token strip, the logit lens and the top MLP neurons at the chosen
position (templates/partials/_forward.html) from Engine.activations, the numbers /api/activations gives. The
partial also carries the tokens and the residual norms as a JSON block, for what only the browser draws
(static/js/internals.js): the norms heatmap, and the attention heatmap, which asks /api/activations for the
chosen block's heads itself (switching heads needs no request). The head finder is /partials/heads.

Like every partial, these answer 200: a problem with the input comes back as a message box (app/routes/pages.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app import copying
from app import schemas as s
from app.ablation import ablate_view
from app.copying import CLEAR, CopyingFacts
from app.demo import DEFAULT_INTERNALS_PROMPT
from app.engine import Engine
from app.patching import defaults as patch_defaults
from app.patching import patch_view
from app.sources import InsideDep
from app.templating import Text, message, or_message, partial, pct, query_number, render
from app.security import ModelTurn
from model.model_card import percent


router = APIRouter(include_in_schema=False, dependencies=[ModelTurn])  # every route runs the model

LENS_TOP = 3   # candidates per cell of the logit lens (its tooltip lists them)
NEURONS = 5    # most active MLP neurons per block
SHADES = 10    # lens cells shade-0 … shade-9 by probability; neuron bars bar-0 … bar-10 (static/css/lab.css)
EMPTY_PROMPT = "Type a prompt above to look inside."


def architecture(info: s.ModelInfo) -> dict:
    """Per-part parameter counts of one block and the final norm, from the totals by part and the final norm's
    own count (every block has the same shape)."""
    L, p = info.n_layer, info.parameters
    final_ln = info.final_norm
    block_ln = (p["layer_norm"] - final_ln) // L
    shown = list(range(L)) if L <= 4 else [0, 1, L - 1]  # a deep model: the first two, "…", the last
    return {"attention": p["attention"] // L, "mlp": p["mlp"] // L, "block_ln": block_ln, "final_ln": final_ln,
            "block": (p["attention"] + p["mlp"]) // L + block_ln, "head_size": info.head_dim,
            "hidden": info.n_inner, "shown": shown, "hidden_blocks": L - len(shown),
            "bytes": p["total"] * {"float16": 2, "bfloat16": 2}.get(info.dtype, 4)}


# ---------------------------------------------------------------- one forward pass

def position(value: str) -> int:
    """The pos field: a token's position, or -1 for the last token (also for anything that is not a number)."""
    try:
        return int(value)
    except ValueError:
        return -1


def lens_cell(top: list[s.LensToken], next_id: int | None) -> dict:
    best = top[0]
    hit = best.id == next_id
    title = " · ".join(f"“{c.text}” {pct(c.prob)}" for c in top)
    return {"token": best.text, "prob": best.prob, "hit": hit, "shade": min(SHADES - 1, max(0, int(best.prob * SHADES))),
            "title": title + (" · matches the next token of the prompt" if hit else "")}


def neuron_rows(layers: list[s.LayerNeurons], p: int) -> list[dict]:
    """The top neurons of each block at position p; bars are tenths of the largest activation there."""
    most = max([n.value for layer in layers for n in layer.top[p]] + [1e-9])
    return [{"layer": layer.layer,
             "top": [{"neuron": n.neuron, "value": n.value, "bar": round(max(0.0, n.value / most) * SHADES)}
                     for n in layer.top[p]]}
            for layer in layers]


async def forward_context(engine: Engine, prompt: str, pos: int) -> dict:
    """What the partial shows of the prompt's forward pass, at position pos (-1, or one past the end: the last).
    Raises InputError or Busy as the engine does."""
    r = await engine.activations(s.ActivationsRequest(text=prompt, logit_lens=LENS_TOP, neurons=NEURONS))
    ids = [t.id for t in r.tokens]
    n = len(ids)
    chosen = pos if 0 <= pos < n else n - 1
    lens = [{"label": state.label,
             "cells": [lens_cell(top, ids[q + 1] if q + 1 < n else None) for q, top in enumerate(state.top)]}
            for state in r.logit_lens or []]
    return {"tokens": r.tokens, "pos": chosen if chosen == pos else -1, "chosen": chosen, "lens": lens,
            "neurons": neuron_rows(r.neurons or [], chosen),
            "data": {"tokens": [t.model_dump() for t in r.tokens],
                     "residual_norms": r.residual_norms.model_dump() if r.residual_norms else None}}


async def try_forward(engine: Engine, prompt: str, pos: int) -> dict:
    """forward_context, or the message to show in its place: {"error": text, "kind": "info" | "error"}."""
    if not prompt:
        return {"error": EMPTY_PROMPT, "kind": "info"}
    return await or_message(forward_context(engine, prompt, pos))


@router.get("/internals", response_class=HTMLResponse)
async def internals(request: Request, inside: InsideDep, prompt: str = DEFAULT_INTERNALS_PROMPT,
                    off: str = "", ablate_mode: str = "zero", clean: str = "", corrupted: str = "",
                    right: str = "", wrong: str = ""):
    engine = inside.engine
    info = engine.info()
    pos = int(query_number(request, "pos", -1, -1, info.n_ctx - 1))
    looked = inside.refusal is None
    forward = await try_forward(engine, prompt, pos) if looked else {"error": inside.refusal, "kind": "info"}
    return render(request, "internals.html", "internals", source=inside.source if looked else None,
                  info=info, arch=architecture(info), prompt=prompt,
                  default_prompt=DEFAULT_INTERNALS_PROMPT, model_key=inside.source.key if looked else "",
                  head_hint=head_hint(await copying.facts(engine)), head_kinds=HEAD_KINDS,
                  layer=int(query_number(request, "layer", info.n_layer - 1, 0, info.n_layer - 1)),
                  head=int(query_number(request, "head", 0, 0, info.n_head - 1)),
                  pos=pos, forward=None if "error" in forward else forward,
                  error=forward.get("error"), kind=forward.get("kind"),
                  ablate=await ablate_view(engine, prompt, off, mode=ablate_mode) if looked else None,
                  patch=None if not looked else await patch_view(
                      engine, *(given or default for given, default in zip((clean, corrupted, right, wrong),
                                                                            patch_defaults().values())), run=False),
                  patch_defaults=patch_defaults())


@router.post("/partials/forward", response_class=HTMLResponse)
async def forward_partial(request: Request, inside: InsideDep, prompt: Text = "", pos: Text = "-1"):
    # the form sends its other fields too (layer, head, sort): the browser draws what depends on them
    forward = await try_forward(inside.engine, prompt, position(pos))
    if "error" in forward:
        return message(request, forward["error"], forward["kind"])
    return partial(request, "partials/_forward.html", f=forward)


# ---------------------------------------------------------------- the head finder

HEAD_KINDS = (("previous_token", "previous token"), ("induction", "induction"), ("first_token", "first token"))
HEAD_ROWS = 12  # rows of the head finder's table: the heads worth a look, not all of a large model's


def head_hint(facts: CopyingFacts) -> str:
    """What the attention hint may claim: the heads the finder's probe measured, with their scores."""
    claims = []
    for key, what in (("previous_token", "looks at the previous token"),
                      ("induction", "looks back at what followed the current token last time (an induction head)")):
        best = facts.best(key)
        if best[key] >= CLEAR:
            claims.append(f"block {best['layer']}, head {best['head']} {what}: {percent(best[key])} of its attention")
        else:
            claims.append(f"no head clearly {what.split(' (')[0]} (the best, block {best['layer']}, head "
                          f"{best['head']}, puts {percent(best[key])} there)")
    return ("In this model, on the head finder's probe below (random words said twice): " + "; ".join(claims)
            + ".")


@router.post("/partials/heads", response_class=HTMLResponse)
async def heads_partial(request: Request, inside: InsideDep, prompt: Text = "", on: Text = "prompt",
                        sort: Text = "induction"):
    engine = inside.engine
    sort = sort if sort in dict(HEAD_KINDS) else "induction"
    on_probe = on == "probe"
    probe = await engine.finder_probe()
    text = probe if on_probe else prompt
    if not text.strip():
        return message(request, "Type a prompt above, or measure the heads on the built-in probe.", "info")
    found = await or_message(engine.heads(text))  # rows, or what to show in their place
    if isinstance(found, dict):
        return message(request, found["error"])
    rows = sorted(found, key=lambda r: r[sort], reverse=True)
    return partial(request, "partials/_heads.html", rows=rows[:HEAD_ROWS], hidden=max(0, len(rows) - HEAD_ROWS),
                   kinds=HEAD_KINDS, sort=sort, on_probe=on_probe, probe_text=probe,
                   n_tokens=len(await engine.encode(text)))
