"""Activation patching on the Internals page: a grid of (block, position) cells, each the corrupted prompt run
with the clean prompt's residual stream written in there (templates/partials/_patch.html, routed by
app/pages/patching.py). The numbers are Engine.patch's, the ones POST /api/patch gives.
"""

from __future__ import annotations

from app.schemas import requests as rq
from app.demo import PATCH_PRESETS, lacking
from app.serving.engine import Engine
from app.templating import or_message

SHADES = 5  # cells shade pt-n5 … pt-p5 by their normalised value, in fifths (static/css/ablate.css)


def presets(engine: Engine) -> list[dict]:
    info = engine.info()
    return [{**p, "lacking": lacking(p, engine.loaded.card.copying if engine.loaded.card else None,
                                     info.parameters["total"])} for p in PATCH_PRESETS]


def shade(v: float) -> str:
    n = max(-SHADES, min(SHADES, round(v * SHADES)))
    return f"p{n}" if n >= 0 else f"n{-n}"


async def grid_context(engine: Engine, clean: str, corrupted: str, right: str, wrong: str) -> dict:
    r = await engine.patch(rq.PatchRequest(clean=clean, corrupted=corrupted, answers=[right, wrong]))
    columns = [{"clean": a.text, "corrupted": b.text, "differs": a.id != b.id}
               for a, b in zip(r.clean_tokens, r.corrupted_tokens)]
    rows = [{"block": b, "cells": [{"value": v, "norm": n, "shade": shade(n)} for v, n in zip(values, norms)]}
            for b, (values, norms) in enumerate(zip(r.grid, r.normalised))]
    return {"columns": columns, "rows": rows, "clean_diff": r.clean, "corrupted_diff": r.corrupted,
            "answers": [a.text for a in r.answers]}


async def patch_view(engine: Engine, clean: str, corrupted: str, right: str, wrong: str, preset: str = "",
                     run: bool = True) -> dict:
    chosen = next((p for p in presets(engine) if p["key"] == preset), None)
    if chosen:
        clean, corrupted, right, wrong = chosen["clean"], chosen["corrupted"], chosen["right"], chosen["wrong"]
    view = {"clean": clean, "corrupted": corrupted, "right": right, "wrong": wrong, "presets": presets(engine),
            "preset": chosen, "run": run}
    if not run:
        return view
    if not (clean and corrupted and right and wrong):
        return {**view, "error": "Fill in both prompts and both answers, or pick a preset.", "kind": "info"}
    return {**view, **await or_message(grid_context(engine, clean, corrupted, right, wrong))}


def defaults() -> dict:
    p = PATCH_PRESETS[0]
    return {"clean": p["clean"], "corrupted": p["corrupted"], "right": p["right"], "wrong": p["wrong"]}
