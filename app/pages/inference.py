"""The Inference page: the stepper (app/views/stepper.py) rendered by the server.

Each action (sample, take the most likely, pick a bar, undo, start over) or a change of setting
posts the stepper's state to /partials/inference and gets the stepper back: the bars, and
out-of-band the text so far, the history, the statistics and the URL.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from app.classroom import teacher as classroom
from app.deps import Number
from app.demo import DEFAULT_INFERENCE_PROMPT
from app.serving.sources import SourcesDep
from app.views.stepper import BARS, DEFAULTS, among, dice_of, steps_of
from app.views.stepping import Changes
from app.templating import partial, render
from app.security import ModelTurn

router = APIRouter(include_in_schema=False, dependencies=[ModelTurn])  # every route runs the model



def query_float(request: Request, name: str) -> float | None:
    """A number from the URL; a mangled one is None (the page falls back to the default, not a 422)."""
    try:
        return float(request.query_params[name])
    except (KeyError, ValueError):
        return None


@router.get("/inference", response_class=HTMLResponse)
async def inference(request: Request, sources: SourcesDep, prompt: str = DEFAULT_INFERENCE_PROMPT, steps: str = "",
                    model: str = "", compare: str = "", off: str = "", patch: str = "", clean: str = ""):
    source = sources.get(model)
    dice = dice_of(*(query_float(request, k) for k in ("temperature", "top_k", "top_p", "seed", "n")))
    changes = Changes(off, patch, clean)
    context = await steps_of(sources, source, prompt, steps, dice, "", None, compare, changes)
    if context.pop("unread"):
        context["notice"] = "This link's steps could not be read: starting from the prompt."
    info = source.engine.info() if source.engine else None  # a model server does not say its vocabulary
    # a class session follows the loaded model's stepper only: its steps are that model's ids
    lead = (await classroom.follow(request, prompt, dice, context) if source is sources.main
            else classroom.start_context(request))
    return render(request, "inference.html", "inference", info=info, prompt=prompt, dice=dice, source=source,
                  default_prompt=DEFAULT_INFERENCE_PROMPT, defaults=DEFAULTS, n_choices=BARS, among=among,
                  oob=False, classroom=lead, changes=changes, **context)


@router.post("/partials/inference", response_class=HTMLResponse)
async def inference_partial(request: Request, sources: SourcesDep, prompt: Annotated[str, Form()] = "",
                            steps: Annotated[str, Form()] = "",
                            temperature: Number = None, top_k: Number = None, top_p: Number = None,
                            seed: Number = None, n: Number = None, action: Annotated[str, Form()] = "",
                            pick: Annotated[int | None, Form()] = None, model: Annotated[str, Form()] = "",
                            compare: Annotated[str, Form()] = "", off: Annotated[str, Form()] = "",
                            patch: Annotated[str, Form()] = "", clean: Annotated[str, Form()] = ""):
    dice = dice_of(temperature, top_k, top_p, seed, n)
    source = sources.get(model)
    changes = Changes(off, patch, clean)
    context = await steps_of(sources, source, prompt, steps, dice, action or ("pick" if pick is not None else ""),
                             pick, compare, changes)
    context.pop("unread")
    if source is sources.main:
        await classroom.follow(request, prompt, dice, context)
    info = source.engine.info() if source.engine else None
    response = partial(request, "partials/_inference.html", prompt=prompt, dice=dice, among=among, info=info,
                       oob=True, changes=changes, **context)
    response.headers["HX-Replace-Url"] = context["url"]
    return response
