"""Switching parts off on the Internals page: the next-token bars and the logit lens, unchanged and with the set
switched off, side by side (templates/partials/_ablate.html).

The set lives in the form's `off` field and in the URL (app/views/ablation.py spells it). A click on a head, a neuron or
a block's attention or MLP posts the form with `toggle` naming that part; the partial comes back with the new set,
and its data-url-param puts it in the address bar. The view itself is app/views/ablation.py's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from app.views.ablation import ablate_view
from app.serving.sources import InsideDep
from app.templating import partial
from app.security import ModelTurn

router = APIRouter(include_in_schema=False, dependencies=[ModelTurn])  # every route runs the model


@router.post("/partials/ablate", response_class=HTMLResponse)
async def ablate_partial(request: Request, inside: InsideDep, prompt: Annotated[str, Form()] = "",
                         off: Annotated[str, Form()] = "", toggle: Annotated[str, Form()] = "",
                         ablate_mode: Annotated[str, Form()] = "zero", layer: Annotated[str, Form()] = "",
                         head: Annotated[str, Form()] = ""):
    view = await ablate_view(inside.engine, prompt, off, toggle, ablate_mode, layer, head)
    return partial(request, "partials/_ablate.html", a=view)
