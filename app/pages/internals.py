"""The internals page: the architecture, and one forward pass of a prompt, rendered on the server where it can be.

The page and /partials/forward render the token strip, the logit lens, the top MLP neurons at the chosen
position, the residual norms heatmap and the attention heatmaps of the chosen block (templates/partials/_forward.html)
from Engine.activations, the numbers /api/activations gives. Every head of the block is drawn, and CSS shows the one
whose radio is checked (/internals/heads.css), so switching heads needs no request. The head finder is
/partials/heads.

Like every partial, these answer 200: a problem with the input comes back as a message box (templating.or_message).
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.views import copying
from app.schemas import answers as an, requests as rq
from app.views.ablation import ablate_view
from app.views.copying import CLEAR, CopyingFacts
from app.demo import DEFAULT_INTERNALS_PROMPT
from app.serving.engine import Engine
from app.views.figures import LENS_CHARS, heatmap, lens_grid, shown
from app.views.patching import defaults as patch_defaults
from app.views.patching import patch_view
from app.serving.sources import InsideDep
from app.templating import Text, message, or_message, partial, pct, query_number, render
from app.problems import sentence
from app.security import ModelTurn
from model.model_card import percent


router = APIRouter(include_in_schema=False, dependencies=[ModelTurn])  # every route runs the model

LENS_TOP = 3   # candidates per cell of the logit lens (its tooltip lists them)
NEURONS = 5    # most active MLP neurons per block
SHADES = 10    # lens cells shade-0 … shade-9 by probability; neuron bars bar-0 … bar-10 (static/css/lab.css)
EMPTY_PROMPT = "Type a prompt above to look inside."


def architecture(info: an.ModelInfo) -> dict:
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


def lens_cell(top: list[an.LensToken], next_id: int | None) -> dict:
    best = top[0]
    hit = best.id == next_id
    title = " · ".join(f"“{c.text}” {pct(c.prob)}" for c in top)
    return {"token": shown(best.text, LENS_CHARS - 2 if hit else LENS_CHARS),  # a hit's ✓ takes two characters
            "prob": best.prob, "hit": hit, "shade": min(SHADES - 1, max(0, int(best.prob * SHADES))),
            "title": title + (" · matches the next token of the prompt" if hit else "")}


def neuron_rows(layers: list[an.LayerNeurons], p: int) -> list[dict]:
    """The top neurons of each block at position p; bars are tenths of the largest activation there."""
    most = max([n.value for layer in layers for n in layer.top[p]] + [1e-9])
    return [{"layer": layer.layer,
             "top": [{"neuron": n.neuron, "value": n.value, "bar": round(max(0.0, n.value / most) * SHADES)}
                     for n in layer.top[p]]}
            for layer in layers]


def norms_map(tokens: list[an.Piece], r: an.ResidualNorms) -> dict:
    """The residual stream's length at each state (a row) and token (a column)."""
    values = [v for row in r.norms for v in row]
    lo, hi = min(values), max(values)
    return {"map": heatmap(r.labels, [shown(t.text, 10) for t in tokens], lambda i, p: r.norms[i][p],
                           lambda v: (v - lo) / (hi - lo) if hi > lo else 0.5, lambda v: f"{v:.2f}",
                           "{c}, {r}: length {v}.", {"r": r.labels, "c": token_names(tokens)},
                           (lambda v: f"{v:.0f}" if v >= 100 else f"{v:.1f}") if len(tokens) <= 10 else None),
            "idle": f"Lightest {lo:.1f}, darkest {hi:.1f}. Hover over a cell, or focus the chart and use the arrow keys."}


def attention_maps(tokens: list[an.Piece], patterns: list[an.AttentionPattern]) -> list[dict]:
    """Each head's attention pattern of one block as a heatmap: a row per query, a cell per earlier key, shaded by
    the square root so that small weights stay visible (the head's thumbnail shows the same cells). A cell's readout
    gives its weight without "1 in N": a long prompt's maps hold a few hundred thousand of them."""
    labels = [shown(t.text, 12) for t in tokens]
    names = token_names(tokens)
    number = (lambda v: f"{v:.2f}".lstrip("0") if v >= 0.005 else "") if len(tokens) <= 12 else None

    def one(a: an.AttentionPattern) -> dict:
        w = a.pattern
        return {"head": a.head, "map": heatmap(
            labels, labels, lambda q, k: w[q][k] if k <= q else None, math.sqrt, lambda v: pct(v, short=True),
            f"Block {a.layer}, head {a.head}: {{r}} gives {{v}} of its attention to {{c}}.", {"r": names, "c": names},
            number)}
    return [one(a) for a in sorted(patterns, key=lambda a: a.head)]


def token_names(tokens: list[an.Piece]) -> list[str]:
    return [f"“{t.text}” (position {i})" for i, t in enumerate(tokens)]


async def forward_context(engine: Engine, prompt: str, pos: int, layer: int) -> dict:
    """What the partial shows of the prompt's forward pass, at position pos (-1, or one past the end: the last),
    with the attention of block `layer` (clamped to the model's). Raises InputError or Busy as the engine does."""
    layer = max(0, min(engine.info().n_layer - 1, layer))
    r = await engine.activations(rq.ActivationsRequest(text=prompt, logit_lens=LENS_TOP, neurons=NEURONS,
                                                      attention=[rq.AttentionSelect(layer=layer)]))
    ids = [t.id for t in r.tokens]
    n = len(ids)
    chosen = pos if 0 <= pos < n else n - 1
    lens = [{"label": state.label,
             "cells": [lens_cell(top, ids[q + 1] if q + 1 < n else None) for q, top in enumerate(state.top)]}
            for state in r.logit_lens or []]
    return {"tokens": r.tokens, "pos": chosen if chosen == pos else -1, "chosen": chosen, "lens": lens,
            "lens_grid": lens_grid([t.text for t in r.tokens], [state["label"] for state in lens]),
            "neurons": neuron_rows(r.neurons or [], chosen), "layer": layer,
            "norms": norms_map(r.tokens, r.residual_norms) if r.residual_norms else None,
            "heads": attention_maps(r.tokens, r.attention or [])}


async def try_forward(engine: Engine, prompt: str, pos: int, layer: int) -> dict:
    """forward_context, or the message to show in its place: {"error": text, "kind": "info" | "error"}."""
    if not prompt:
        return {"error": EMPTY_PROMPT, "kind": "info"}
    return await or_message(forward_context(engine, prompt, pos, layer))


@router.get("/internals", response_class=HTMLResponse)
async def internals(request: Request, inside: InsideDep, prompt: str = DEFAULT_INTERNALS_PROMPT,
                    off: str = "", ablate_mode: str = "zero", clean: str = "", corrupted: str = "",
                    right: str = "", wrong: str = ""):
    engine = inside.engine
    info = engine.info()
    pos = int(query_number(request, "pos", -1, -1, info.n_ctx - 1))
    layer = int(query_number(request, "layer", info.n_layer - 1, 0, info.n_layer - 1))
    looked = inside.refusal is None
    forward = await try_forward(engine, prompt, pos, layer) if looked else {"error": inside.refusal, "kind": "info"}
    return render(request, "internals.html", "internals", source=inside.source if looked else None,
                  info=info, arch=architecture(info), prompt=prompt,
                  default_prompt=DEFAULT_INTERNALS_PROMPT, model_key=inside.source.key if looked else "",
                  head_hint=head_hint(await copying.facts(engine)), head_kinds=HEAD_KINDS,
                  layer=layer, head=int(query_number(request, "head", 0, 0, info.n_head - 1)),
                  pos=pos, forward=None if "error" in forward else forward,
                  error=forward.get("error"), kind=forward.get("kind"),
                  ablate=await ablate_view(engine, prompt, off, mode=ablate_mode) if looked else None,
                  patch=None if not looked else await patch_view(
                      engine, *(given or default for given, default in zip((clean, corrupted, right, wrong),
                                                                            patch_defaults().values())), run=False),
                  patch_defaults=patch_defaults())


@router.post("/partials/forward", response_class=HTMLResponse)
async def forward_partial(request: Request, inside: InsideDep, prompt: Text = "", pos: Text = "-1",
                          layer: Text = "", head: Text = "0"):
    # the form sends its other fields too (sort): only these change what is drawn
    engine = inside.engine
    info = engine.info()
    block = max(0, min(info.n_layer - 1, position(layer) if layer else info.n_layer - 1))
    forward = await try_forward(engine, prompt, position(pos), block)
    if "error" in forward:  # the message, and no figures of an earlier prompt beside it
        return partial(request, "partials/_forward.html", f=None, text=sentence(forward["error"]),
                       kind=forward["kind"], n_head=info.n_head, layer=block, head=position(head))
    return partial(request, "partials/_forward.html", f=forward, head=position(head), prompt=prompt)


# ---------------------------------------------------------------- which head shows (runs no model)

styles = APIRouter(include_in_schema=False)
MOST_HEADS = 256


@styles.get("/internals/heads.css")
async def heads_css(n: int = Query(12, ge=1, le=MOST_HEADS)):
    """Which attention heatmap shows: the one whose head's radio is checked, a selector for each of n heads (the
    page asks for its model's count)."""
    shows = ",\n".join(f'.lab-attn:has(input[name=head][value="{h}"]:checked) :is(.attn-map, .attn-csv)[data-head="{h}"]'
                        for h in range(n))
    return Response(shows + " { display: block; }\n", media_type="text/css")


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
