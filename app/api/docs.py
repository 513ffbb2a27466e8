"""The API reference page at /docs: Swagger UI served from static/vendor (no CDN), so it works offline.

FastAPI's own /docs and /redoc load their scripts from a CDN and start Swagger UI with an
inline script that the Content-Security-Policy blocks; app.main turns them off and includes this.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.templating import templates

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "docs.html", {"title": request.app.title})
