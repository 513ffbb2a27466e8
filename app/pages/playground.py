"""The Playground: streamed generation from the model a page chose, its settings in the URL so a prepared demo is a
link; the stream itself is read by static/js/playground.js, which hands each event's HTML to htmx."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from app.demo import DEFAULT_PLAYGROUND_PROMPT, PLAYGROUND_PRESETS
from app.deps import EngineDep
from app.errors import require_json
from app.serving.sources import Sources, SourcesDep
from app.serving.streaming import EventStream
from app.security import ModelTurn
from app.templating import LOSS_LEGEND, STOPS, eos_text, query_number, render
from app.views.writing import PageRequest, page_events

router = APIRouter(include_in_schema=False)


# The Playground streams in the browser (static/js/playground.js reads Server-Sent Events of HTML the server
# draws); the server renders the controls with the URL's settings, so a prepared demo is a link. Internals and Inference
# are app/pages/internals.py and app/pages/inference.py.

PLAYGROUND_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 1.0, "max_new_tokens": 80}
COMPARE_TEMPERATURES = (0.0, 0.7, 1.0, 1.5)


@router.post("/playground/generate", dependencies=[Depends(require_json), ModelTurn])
async def playground_generate(req: PageRequest, sources: SourcesDep, engine: EngineDep) -> Response:
    """The Playground's stream from the model it chose: /api/generate's events, drawn for the page's column."""
    stream = await sources.get(req.model).generate(req)
    return EventStream(stream, page_events(stream, req, eos_text(engine)))


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
                  **sources.chooser(sources.get(model)) | playground_compare(sources, model, compare),
                  temperature=query_number(request, "temperature", d["temperature"], 0, 2),
                  top_k=int(query_number(request, "top_k", d["top_k"], 0, 100)),
                  top_p=query_number(request, "top_p", d["top_p"], 0.05, 1),
                  max_new_tokens=int(query_number(request, "max_new_tokens", min(d["max_new_tokens"], cap), 1, cap)))


def playground_compare(sources: Sources, model: str, compare: str) -> dict:
    other = sources.other(compare, sources.get(model))
    return {"compare_key": other.key if other else ""} if len(sources) > 1 else {}
