"""Stage 3, training: how surprised the model is by each token of a text (app/views/loss.py), on any model a page can
choose."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.demo import DEFAULT_LOSS_TEXT, LOSS_EXAMPLES
from app.deps import EngineDep
from app.views.loss import try_loss
from app.pages.live import live_context
from app.serving.live import LiveDep
from app.serving.sources import SourcesDep
from app.security import ModelTurn
from app.templating import LOSS_LEGEND, Text, message, partial, render

router = APIRouter(include_in_schema=False)


@router.get("/loss", dependencies=[ModelTurn], response_class=HTMLResponse)
async def loss(request: Request, engine: EngineDep, sources: SourcesDep, live: LiveDep, text: str = DEFAULT_LOSS_TEXT,
               model: str = ""):
    source = sources.get(model)
    result = await try_loss(source, text)
    return render(request, "loss.html", "loss", text=text, examples=LOSS_EXAMPLES, legend=LOSS_LEGEND,
                  live=live_context(live, sources.all),
                  default_text=DEFAULT_LOSS_TEXT, info=engine.info(), source=source, **sources.chooser(source),
                  **result)


@router.post("/partials/loss", dependencies=[ModelTurn], response_class=HTMLResponse)
async def loss_partial(request: Request, sources: SourcesDep, text: Text = "", model: Text = ""):
    result = await try_loss(sources.get(model), text)
    if "error" in result:
        return message(request, result["error"], result["kind"])
    return partial(request, "partials/_loss.html", legend=LOSS_LEGEND, text=text, oob=True, **result)
