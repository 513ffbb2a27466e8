"""Security headers on every response, CORS only when configured, and a per-client share of the model.

Pure ASGI middleware (not BaseHTTPMiddleware): it wraps `send` and never buffers
a body, so streams flow and a client disconnect still reaches the route.
"""

from __future__ import annotations

import json
from collections import Counter

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings

# Pages use only their own scripts and styles (no inline <script>, no style attributes),
# so nothing inline and nothing from another origin needs allowing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
# routes whose work runs on the model thread; each request holds a share until its response ends
MODEL_PATHS = ("/api/next-token", "/api/score", "/api/activations", "/api/generate",
               "/v1/completions", "/partials/loss", "/partials/heads", "/partials/forward",
               "/partials/inference")


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in HEADERS if h[0] not in names)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ClientShare:
    """At most `limit` model requests (streams included) in flight per client address; more get 429.

    The server-wide queue bounds total latency (503 beyond it); this keeps one
    student with many tabs or a script from filling that queue for the room.
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in MODEL_PATHS:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        if self.in_flight[client] >= self.limit:
            return await self._refuse(scope, send)
        self.in_flight[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[client] -= 1
            if not self.in_flight[client]:
                del self.in_flight[client]

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = (f"you already have {self.limit} model requests running, the most one computer may have "
                   "at once; wait for one to finish (or stop a generation) and try again")
        kind = b"application/json"
        if scope["path"].startswith("/v1/"):
            data = json.dumps({"error": {"message": message, "type": "rate_limit_exceeded", "param": None,
                                         "code": None}}).encode()
        elif scope["path"].startswith("/api/"):
            data = json.dumps({"message": message, "detail": None}).encode()
        else:  # a page's partial: the page shows the sentence in place of the result
            kind, data = b"text/plain; charset=utf-8", (message[0].upper() + message[1:] + ".").encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(data)).encode()),
                                (b"retry-after", b"2")]})
        await send({"type": "http.response.body", "body": data})


def install(app, settings: Settings) -> None:
    """Add the middleware; the last added runs first, so the headers land on every answer, 429s included."""
    if settings.per_client_requests > 0:
        app.add_middleware(ClientShare, limit=settings.per_client_requests)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["content-type"])
    app.add_middleware(SecurityHeaders)
