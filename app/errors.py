"""Bad input gets a 4xx whose message says what was wrong and what is allowed; nothing gets a bare 500.

/api/* errors are {"message": ..., "detail": [...]}; /v1/* errors use OpenAI's
{"error": {"message": ..., "type": ...}} so its client libraries show the message.
The guard middleware turns away oversized bodies (413) before any route reads
them; JSON routes depend on require_json, which answers 415 to other bodies.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.problems import InputError, Problem, sentence
from app.security import HEADERS

log = logging.getLogger("deepdive.errors")
JSON_PATHS = ("/api/", "/v1/")  # where errors are JSON; pages keep FastAPI's own
OPENAI_PATH = "/v1/"


def error_response(path: str, status: int, message: str, detail: list | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    if path.startswith(OPENAI_PATH):
        kind = {413: "request_too_large", 415: "invalid_request_error", 422: "invalid_request_error",
                503: "server_busy"}.get(status, "server_error" if status >= 500 else "invalid_request_error")
        param = ".".join(str(x) for x in detail[0]["loc"][1:]) if detail else None
        body: dict[str, Any] = {"error": {"message": sentence(message), "type": kind, "param": param or None, "code": None}}
    else:
        body = {"message": sentence(message), "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def _where(loc: tuple | list) -> str:
    parts = [str(x) for x in loc if x not in ("body", "query", "path")]
    return ".".join(parts) or "the body"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _body_fields(request: Request) -> list[str]:
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def describe(errors: list[dict], fields: list[str]) -> str:
    """Pydantic's errors as sentences a person can act on: what to do first, then what was wrong."""
    sentences = []
    for e in errors[:5]:
        where, kind, msg = _where(e["loc"]), e["type"], e["msg"].removeprefix("Value error, ")
        if kind == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "")
            at = e["loc"][-1] if isinstance(e["loc"][-1], int) else None
            where = f" at character {at}" if at is not None else ""
            return sentence(f"Send valid JSON: the body is not ({reason or 'cannot parse it'}{where})")
        if kind == "extra_forbidden":
            allowed = f"; the fields are: {', '.join(fields)}" if fields and len(e["loc"]) == 2 else ""
            sentences.append(f"Remove {where}: it is not a field of this request{allowed}")
        elif kind == "missing":
            sentences.append(f"Add {where}: it is required" if e["loc"][1:] else "Send a JSON object as the body: none came")
        elif kind in ("model_type", "model_attributes_type", "dict_type") and len(e["loc"]) <= 1:
            sentences.append(f"Send a JSON object as the body, not {_shown(e.get('input'))}")
        elif kind == "value_error" and len(e["loc"]) <= 1:
            sentences.append(msg)
        else:
            sentences.append(f"Fix {where}: {_lower_first(msg)} (got {_shown(e.get('input'))})")
    more = f" And {len(errors) - 5} more problems." if len(errors) > 5 else ""
    return " ".join(map(sentence, sentences)) + more


def _detail(errors: list[dict]) -> list[dict]:
    # only what is JSON as it stands: pydantic's "input" and "ctx" may hold NaN or exceptions
    return [{"loc": [x if isinstance(x, int) else str(x) for x in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in errors]


def install(app: FastAPI, max_body_bytes: int, larger: dict[str, int] | None = None) -> None:
    app.add_middleware(GuardMiddleware, max_body_bytes=max_body_bytes, larger=larger or {})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        return error_response(request.url.path, 422, describe(errors, _body_fields(request)), _detail(errors))

    @app.exception_handler(Problem)
    async def refused(request: Request, exc: Problem) -> Response:
        headers = {"Retry-After": exc.retry_after} if exc.retry_after else None
        if not (request.url.path.startswith(JSON_PATHS) or sends_json(request)):  # a page's form: htmx shows it
            return PlainTextResponse(exc.sentence, exc.status, headers=headers)
        return error_response(request.url.path, exc.status, str(exc), headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if not request.url.path.startswith(JSON_PATHS):
            return await http_exception_handler(request, exc)
        if exc.status_code == 400 and request.method == "POST":
            # FastAPI's answer when json.loads fails other than by syntax: bytes that are not UTF-8, or
            # nesting too deep to parse; for the caller, both are invalid JSON
            return error_response(request.url.path, 422, "The body is not valid JSON: send UTF-8 text "
                                                         "holding one JSON object")
        return error_response(request.url.path, exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # this answer is sent from outside every middleware, so it carries the security headers itself
        return error_response(request.url.path, 500, f"Something went wrong on the server ({type(exc).__name__}); "
                                                     "its log has the details. Try again, or report it",
                              headers={name.decode(): value.decode() for name, value in HEADERS})


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def sends_json(request: Request) -> bool:
    media = media_type(request)
    return media == "application/json" or media.endswith("+json")


def require_json(request: Request) -> None:
    """A dependency of every route with a JSON body: other content types get 415."""
    if not sends_json(request):
        media = media_type(request)
        got = f"got {media!r}" if media else "no Content-Type was sent"
        raise InputError(f"The body must be JSON, sent with the header Content-Type: application/json ({got})", 415)


class GuardMiddleware:
    """413 for bodies over the limit, by Content-Length or as streamed.

    The body is read here, within the limit, and replayed to the app; after it,
    receive() passes through so the app still hears a client disconnect.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, larger: dict[str, int] | None = None):
        self.app = app
        self.limit = max_body_bytes
        self.larger = larger or {}  # path -> its own limit (a pasted training text)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        path, declared = scope["path"], Headers(scope=scope).get("content-length", "")
        limit = self.larger.get(path, self.limit)
        if declared.isdigit() and int(declared) > limit:
            return await self._too_large(path, int(declared), limit, scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await self._too_large(path, None, limit, scope, receive, send)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, path: str, size: int | None, limit: int, scope: Scope, receive: Receive,
                         send: Send) -> None:
        what = f"The body is {size:,} bytes" if size is not None else "The body is too large"
        await error_response(path, 413, f"{what}; this server accepts at most {limit:,}: send less")(scope, receive, send)
