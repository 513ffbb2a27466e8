"""Class sessions over HTTP: the teacher's controls (app/classroom/teacher_routes.py), the students' join page,
phone page and guesses (phone_routes.py), and the live events both follow (event_routes.py). Installed here,
with the store the settings choose and the answer for a store that does not answer.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from app.classroom import event_routes, phone_routes, rounds, teacher_routes
from app.classroom.limits import ClientLimits
from app.classroom.store import make_store
from app.classroom.store.base import Unavailable
from app.config import Settings
from app.errors import JSON_PATHS, error_response
from app.templating import sentence


def install(app: FastAPI, settings: Settings) -> None:
    """The class session routes and the store the settings choose."""
    app.state.classes = make_store(settings)
    app.state.class_limits = ClientLimits()
    app.state.outlooks = rounds.Outlooks(settings.max_class_sessions)
    app.state.leaving = set()  # the tasks that free a closed phone's place after event_routes.GRACE_S
    app.add_exception_handler(Unavailable, store_away)
    for routes in (teacher_routes, phone_routes, event_routes):
        app.include_router(routes.router)


def store_away(request: Request, exc: Unavailable) -> Response:
    """The store (Redis) does not answer: the sentence, in the form the asker shows. A page gets the site's
    page, htmx a text/plain sentence shown in place, the JSON routes their JSON error."""
    path, retry = request.url.path, {"Retry-After": "2"}
    if path.startswith(JSON_PATHS):
        return error_response(path, 503, str(exc), headers=retry)
    if request.headers.get("hx-request"):
        return PlainTextResponse(sentence(str(exc)), status_code=503, headers=retry)
    return phone_routes.page(request, 503, error=sentence(str(exc)))
