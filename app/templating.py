"""How pages are rendered: the Jinja environment, its filters, and the stages every page belongs to.

`render(request, template, stage_key, **context)` renders a page inside base.html
with the nav and the next-stage link; `partial(request, template, **context)`
renders a fragment; `message(...)` a message box in place of a partial's result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Awaitable
from typing import Annotated, Any

import jinja2
from fastapi import Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app import demo
from app.deps import get_engine
from app.problems import Problem, sentence
from model.model_card import percent

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    path: str


STAGES = (
    Stage("overview", "Overview", "/"),
    Stage("data", "Data", "/data"),
    Stage("tokenizer", "Tokenizer", "/tokenizer"),
    Stage("loss", "Training", "/loss"),
    Stage("internals", "Internals", "/internals"),
    Stage("inference", "Inference", "/inference"),
    Stage("playground", "Playground", "/playground"),
)

WS_KINDS = {" ": "sp", "\n": "nl", "\t": "tab", "\r": "cr"}
WS_MARKS = {"sp": "·", "nl": "↵", "tab": "→", "cr": "␍"}


def ws_segments(text: str) -> list[tuple[str, str]]:
    """Split text into runs of ordinary text and of one whitespace character, for visible marks."""
    out: list[tuple[str, str]] = []
    for ch in text:
        kind = WS_KINDS.get(ch, "text")
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + ch)
        else:
            out.append((kind, ch))
    return out


def thousands(n: int | float) -> str:
    return f"{n:,}"


def si(n: float) -> str:
    """1234567 -> '1.2 M': token counts read aloud."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g}"


# (at least p, decimals of the percentage); below the last: two significant digits and "1 in N".
PCT_STEPS = ((0.995, 0), (0.1, 1), (0.001, 2))


def pct(p: float, short: bool = False) -> str:
    """A probability as a percentage a student can read; tiny ones as '1 in N' too, unless short."""
    for at_least, decimals in PCT_STEPS:
        if p >= at_least:
            return f"{p * 100:.{decimals}f}%"
    if p <= 0:
        return "0%"
    return f"{p * 100:.2g}%" + ("" if short else f" (1 in {round(1 / p):,})")


LONG_CHIP = 16  # characters: a longer chip may break inside when wider than a line (see deepdive.css)


def breakable(text: str) -> str:
    """Soft hyphens between the characters: where a chip too wide for a line may break, marked ↩."""
    return "\u00ad".join(text)


def hexbytes(data: list[int] | bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def classes(flags: dict[str, bool]) -> str:
    """{"show-ids": True, "show-ws": False} -> "show-ids": a class attribute from switches."""
    return " ".join(name for name, on in flags.items() if on)


def token_title(t: Any, i: int, total: int) -> str:
    """The facts a chip's tooltip and the detail panel list, joined by ' · '."""
    if t.start == t.end:
        where = "continues the character before"
    else:
        where = f"character{'s' if t.end - t.start > 1 else ''} {t.start + 1}" + (
            f"–{t.end}" if t.end - t.start > 1 else "")
    facts = [f"token {i + 1} of {total:,}", f"id {t.id}", f"bytes {hexbytes(t.bytes)}", where]
    if t.partial:
        facts.append("part of a character")
    return " · ".join(facts)


LOSS_BINS = (0.693, 1.609, 2.996, 4.605, 6.908)  # −ln p at p = 50 %, 20 %, 5 %, 1 %, 0.1 %
LOSS_LEGEND = ("p > 50%", "20–50%", "5–20%", "1–5%", "0.1–1%", "p < 0.1%")


def loss_class(loss: float) -> str:
    return f"loss-{sum(loss >= b for b in LOSS_BINS)}"


templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(ROOT / "templates"),
    autoescape=True,  # every template, whatever its name: token texts can hold "<script>"
    trim_blocks=True, lstrip_blocks=True,  # chip streams are white-space: pre-wrap; stray spaces would show
    undefined=jinja2.StrictUndefined,
))
templates.env.filters.update(ws_segments=ws_segments, classes=classes, thousands=thousands, si=si, pct=pct, percent=percent,
                             hexbytes=hexbytes, token_title=token_title, loss_class=loss_class, breakable=breakable, exp=math.exp)
# Playground stop choices: (key, label, stop texts)
STOPS = (("none", "nothing (run to the length)", []), ("line", "the end of the line", ["\n"]),
         ("para", "a blank line", ["\n\n"]))
# what the pages' scripts share with the server, defined here once (base.html hands it to them): the Playground's
# stop texts
PAGE_CONSTANTS = {"stops": {key: texts for key, _, texts in STOPS}}
templates.env.globals.update(stages=STAGES, ws_marks=WS_MARKS, page_constants=PAGE_CONSTANTS,
                             long_chip=LONG_CHIP, copies=demo.copies, lacking=demo.lacking,
                             preset_note=demo.preset_note)


def eos_text(engine: Any) -> str:
    """The loaded model's end-of-text token, as pages name it ("<|endoftext|>" for GPT-2)."""
    return engine.texts[engine.eos_id] if engine.eos_id is not None else "end-of-text"


def render(request: Request, template: str, stage_key: str, status: int = 200, source: Any = None,
           **context: Any) -> HTMLResponse:
    """A full page: base.html's nav marks stage_key, and the next stage is linked at the bottom. `source` (an
    app.serving.sources.Source) is the model the page shows, where it chose one: the header and footer name it."""
    keys = [st.key for st in STAGES]
    i = keys.index(stage_key)
    engine = get_engine(request)
    eos = eos_text(engine)
    served = source is not None and not source.abilities.weights
    return templates.TemplateResponse(request, template, {
        "stage": STAGES[i], "next_stage": STAGES[i + 1] if i + 1 < len(STAGES) else None,
        "eos_text": eos,
        "model_name": source.name if source is not None else engine.info().name,
        "served_by": source.size if served else None,
        "present": request.query_params.get("present") == "1", **context},
        status_code=status)


def partial(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context)


def message(request: Request, text: str, kind: str = "error") -> HTMLResponse:
    """A message box in place of a partial's result (200, so htmx swaps it in)."""
    return partial(request, "partials/_message.html", text=sentence(text), kind=kind)


def query_number(request: Request, name: str, default: float, lo: float, hi: float) -> float:
    """A numeric URL setting, clamped to what the control allows; a mangled one falls back to the default
    (a page answers a hand-edited link with its defaults, not a 422)."""
    try:
        v = float(request.query_params.get(name, default))
    except ValueError:
        return default
    return min(hi, max(lo, v)) if math.isfinite(v) else default


Text = Annotated[str, Form()]  # a text field of a partial's form


async def or_message(work: Awaitable[dict]) -> dict:
    """A view's context, or what to show in its place when the input or the load is the problem:
    {"error": a sentence, "kind": "error"} (partials answer 200, so htmx swaps it in)."""
    try:
        return await work
    except Problem as e:
        return {"error": e.sentence, "kind": "error"}


def flag(value: str | None, default: bool) -> bool:
    return default if value is None else value == "1"
