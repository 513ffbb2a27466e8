"""Security headers on every response, gzip for large pages, CORS only when configured, and fair turns on the model
per client.

The headers are pure ASGI middleware (not BaseHTTPMiddleware): it wraps `send` and never buffers a body, so
streams flow and a client disconnect still reaches the route. A turn on the model is a route dependency
(ModelTurn), declared by every route that runs the model, pages and CSVs included; it is held until the
response has been sent, a stream's last event included (FastAPI runs a yield dependency's exit then).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator

from fastapi import Depends, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.problems import Problem

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


class ShareFull(Problem):
    """No room to wait: the sentence says why and what to do."""

    status, retry_after = 503, "2"


class ClientShare:
    """At most `limit` model requests (streams included) run at once per client address; more wait their turn.

    Each address's extra requests queue behind its own, never in front of another address's, so the model's
    work (and the rows of a batched decode) goes round the addresses: one student's script cannot starve the
    room, and a class behind one school router, sharing one address, takes turns instead of being refused.
    Waiting is bounded: `max_waiting` requests in all (more get 503), none for longer than `wait_s`.
    """

    def __init__(self, limit: int, max_waiting: int, wait_s: float):
        self.limit = limit
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.in_flight: Counter[str] = Counter()
        self.waiting: dict[str, deque[asyncio.Future]] = {}
        self.n_waiting = 0

    async def acquire(self, client: str) -> None:
        if self.in_flight[client] < self.limit:
            self.in_flight[client] += 1
            return
        if self.n_waiting >= self.max_waiting:
            waiting = f"{self.n_waiting:,} " + ("request is" if self.n_waiting == 1 else "requests are")
            raise ShareFull(f"The server is full: {waiting} already waiting for the model. Try again in a moment.")
        turn = asyncio.get_running_loop().create_future()
        queue = self.waiting.setdefault(client, deque())
        queue.append(turn)
        self.n_waiting += 1
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.wait_s)
        except (TimeoutError, asyncio.CancelledError) as e:
            if turn.done():  # the turn came as the wait ended: pass it on
                self.release(client)
            else:
                turn.cancel()
                queue.remove(turn)
                if not queue:
                    del self.waiting[client]
            if isinstance(e, TimeoutError):
                raise ShareFull(f"Your requests waited {self.wait_s:g} s for a turn on the model, the longest "
                                "this server lets one wait. Try again in a moment, or run fewer at once.") from None
            raise
        finally:
            self.n_waiting -= 1

    def release(self, client: str) -> None:
        """A request of this address ended: its place goes to the address's next waiting request, if any."""
        queue = self.waiting.get(client)
        while queue:
            turn = queue.popleft()
            if not queue:
                del self.waiting[client]
            if not turn.done():
                turn.set_result(None)  # the place passes on; in_flight stays
                return
            queue = self.waiting.get(client)
        self.in_flight[client] -= 1
        if not self.in_flight[client]:
            del self.in_flight[client]

async def model_turn(request: Request) -> AsyncIterator[None]:
    """A turn on the model for this client address (app.state.share; none when the settings turn sharing off)."""
    share: ClientShare | None = request.app.state.share
    if share is None:
        yield
        return
    client = request.client.host if request.client else "unknown"
    await share.acquire(client)
    try:
        yield
    finally:
        share.release(client)


ModelTurn = Depends(model_turn)


def install(app, settings: Settings) -> None:
    """Add the middleware (the last added runs first, so the headers land on every answer, 429s included) and the
    model's turns."""
    app.state.share = (ClientShare(settings.per_client_requests, settings.max_waiting_requests,
                                   settings.request_timeout_s) if settings.per_client_requests > 0 else None)
    # the Internals heatmaps are every head's cells as SVG: megabytes for a long prompt, a tenth of that gzipped
    # (event streams are left alone, so tokens still flow one by one)
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=1)  # level 1: a tenth of the bytes, fast
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["content-type"])
    app.add_middleware(SecurityHeaders)
