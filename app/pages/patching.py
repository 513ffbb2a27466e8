"""The activation patching grid's partial on the Internals page (app/views/patching.py builds it). The form's fields are
in the URL, so a link restores the grid. Each cell links to the
Inference stepper on the corrupted prompt with that one patch (app/views/stepper.py's `patch` and `clean`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from app.serving.sources import InsideDep
from app.views.patching import defaults, patch_view
from app.templating import partial
from app.security import ModelTurn

router = APIRouter(include_in_schema=False, dependencies=[ModelTurn])  # every route runs the model


@router.post("/partials/patch", response_class=HTMLResponse)
async def patch_partial(request: Request, inside: InsideDep, clean: Annotated[str, Form()] = "",
                        corrupted: Annotated[str, Form()] = "", right: Annotated[str, Form()] = "",
                        wrong: Annotated[str, Form()] = "", preset: Annotated[str, Form()] = ""):
    view = await patch_view(inside.engine, clean, corrupted, right, wrong, preset)
    return partial(request, "partials/_patch.html", p=view, d=defaults())
