"""The Overview page: the story in six stages, and what the loaded model can and cannot do."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.views import copying
from app.deps import EngineDep
from app.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, engine: EngineDep):
    return render(request, "overview.html", "overview", info=engine.info(), copying=await copying.facts(engine))
