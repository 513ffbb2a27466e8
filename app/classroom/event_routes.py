"""The class's live events, for its teacher and its students alike:

  GET  /class/{code}/events        Server-Sent Events: the current state first, then each change
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.classroom import codes
from app.classroom.sessions import answers, find, gone, not_joined, publish_counts, student_of
from app.classroom.state import state_event
from app.classroom.store.base import StoreError
from app.classroom.teacher import store_of, teacher_session
from app.problems import Busy
from app.serving.streaming import sse
from app.templating import sentence, templates

router = APIRouter(include_in_schema=False)
HEARTBEAT_S = 15.0  # a comment line this often keeps proxies and phones from closing a quiet stream
GRACE_S = 20.0      # a phone that reconnects within this keeps its place (and its guesses)
RETRY_S = 1.0       # how often a stream tries the store again while it is away
RETRY_MS = 1000     # how soon a browser reconnects should the stream break anyway (EventSource's `retry:`)


def class_events(event: dict) -> str:
    """A store's event as the named Server-Sent Events the pages listen for (htmx's SSE extension): the counts,
    as text to swap in; "state", on which a view asks for itself again (the server answers 204 where what it
    shows has not changed); "ended", which closes the stream and fetches the view that says so."""
    if event["type"] == "ended":
        return sse(event["code"], "ended")
    counts = sse(str(event["students"]), "students") + sse(str(event["answers"]), "answers")
    return counts + (sse(event["reason"], "state") if event["type"] == "state" else "")


def connection(notice: str = "") -> str:
    """The line above what the page follows, swapped whole: empty and hidden, or what keeps the class away."""
    return sse(str(templates.env.get_template("partials/_phone.html").module.connection(notice)), "connection")


def last_word(said: str) -> str:
    """A stream with nothing to follow: the session is gone, or this browser is no follower of it."""
    return connection() + sse(said, "ended")


@router.get("/class/{code}/events")
async def events(request: Request, code: str):
    """The session's events as Server-Sent Events, for its teacher and its students; the first is the present.

    A follower's stream answers 200 whatever happened, and says it as an event, because EventSource gives up
    for good on any other status (and htmx's SSE extension logs each of its errors on the page's console):
    "ended" (the session is gone, or this browser is no follower), and while the store does not answer, a
    "connection" line that says so; the stream stays open and tries the store again each RETRY_S. Each
    connection to the store starts with that line cleared and the present."""
    try:
        opened = await opening(request, code)
    except Busy as e:
        opened = e
    return StreamingResponse(across_outages(request, code, opened), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def opening(request: Request, code: str) -> str | AsyncIterator[str]:
    """This follower's stream: its last word, or the session's events."""
    session = await find(request, code)
    if session is None:
        if codes.normal_code(code) is None:
            raise gone(code)
        return last_word(codes.normal_code(code))
    sid = student_of(request)
    is_teacher = await teacher_session(request, session.code) is not None
    if not is_teacher and (sid is None or sid not in session.students):
        return last_word(sentence(not_joined(session.code)))
    store = store_of(request)
    sid = None if is_teacher else sid
    connected = time.time()
    if sid:
        try:
            await store.add_student(session.code, sid, "", now=connected)  # a reconnect keeps its place
        except StoreError as e:
            return last_word(sentence(str(e)))
    subscription = await store.subscribe(session.code)
    return follow(request, session.code, subscription, sid, connected)


async def across_outages(request: Request, code: str, opened: str | AsyncIterator[str] | Busy) -> AsyncIterator[str]:
    """The stream, open across the store's outages: the line says why the class is away, until it is back."""
    while True:
        if isinstance(opened, str):
            yield opened
            return
        if not isinstance(opened, Busy):
            try:
                async for message in opened:
                    yield message
                return
            except Busy as e:
                opened = e
        yield f"retry: {RETRY_MS}\n" + connection(f"Reconnecting… {sentence(str(opened))}")
        await asyncio.sleep(RETRY_S)
        try:
            opened = await opening(request, code)
        except Busy as e:
            opened = e


async def follow(request: Request, code: str, subscription, sid: str | None, connected: float) -> AsyncIterator[str]:
    store = store_of(request)
    pending: asyncio.Future | None = None
    try:
        session = await store.get(code)  # read after subscribing: nothing falls between the two
        if session is None:
            yield last_word(code)
            return
        yield connection() + class_events(state_event(session, await answers(request, session), "hello"))
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(subscription))
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_S)
            if not done:
                if await store.get(code) is None:  # expired while quiet
                    yield class_events({"type": "ended", "code": code})
                    return
                yield ": heartbeat\n\n"
                continue
            event, pending = pending.result(), None
            yield class_events(event)
            if event.get("type") == "ended":
                return
    finally:  # the store stopped answering (Busy, Redis away): across_outages tries again in a moment
        if pending is not None:
            pending.cancel()
        with anyio.CancelScope(shield=True):
            await subscription.aclose()
        if sid:
            task = asyncio.get_running_loop().create_task(leave_later(request, code, sid, connected))
            request.app.state.leaving.add(task)
            task.add_done_callback(request.app.state.leaving.discard)


async def leave_later(request: Request, code: str, sid: str, connected: float) -> None:
    """A closed tab frees its place, unless the phone reconnects within the grace period."""
    await asyncio.sleep(GRACE_S)
    try:
        if await store_of(request).remove_student(code, sid, unless_joined_after=connected):
            await publish_counts(request, code)
    except Busy:
        pass  # the store is down: the place goes when the session expires
