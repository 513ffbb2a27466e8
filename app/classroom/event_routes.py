"""The class's live events, for its teacher and its students alike:

  GET  /class/{code}/events        Server-Sent Events: the current state first, then each change
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.classroom import codes
from app.classroom.sessions import answers, find, gone, not_joined, publish_counts, student_of
from app.classroom.state import snapshot
from app.classroom.store.base import StoreError
from app.classroom.teacher import store_of, teacher_session
from app.problems import Busy
from app.serving.streaming import sse
from app.templating import sentence

router = APIRouter(include_in_schema=False)
HEARTBEAT_S = 15.0  # a comment line this often keeps proxies and phones from closing a quiet stream
GRACE_S = 20.0      # a phone that reconnects within this keeps its place (and its guesses)
RETRY_MS = 1000     # how soon a phone's stream reconnects after the store was away (EventSource's `retry:`)


def class_event(event: dict) -> str:
    """A class event as a plain Server-Sent Event message."""
    return sse(json.dumps(event, ensure_ascii=False))


@router.get("/class/{code}/events")
async def events(request: Request, code: str):
    """The session's events as Server-Sent Events, for its teacher and its students; the first is the present.

    A follower's stream answers 200 whatever happened, and says it as an event, because EventSource gives up
    for good on any other status: "ended" (the session is gone), "refused" (this browser is no follower), and
    "away" with `retry:` (the store does not answer; the browser reconnects by itself a moment later)."""
    try:
        session = await find(request, code)
        if session is None:
            if codes.normal_code(code) is None:
                raise gone(code)
            return stream_of(class_event({"type": "ended", "code": codes.normal_code(code)}))
        sid = student_of(request)
        is_teacher = await teacher_session(request, session.code) is not None
        if not is_teacher and (sid is None or sid not in session.students):
            return stream_of(class_event({"type": "refused", "message": sentence(not_joined(session.code))}))
        store = store_of(request)
        sid = None if is_teacher else sid
        connected = time.time()
        if sid:
            try:
                await store.add_student(session.code, sid, "", now=connected)  # a reconnect keeps its place
            except StoreError as e:
                return stream_of(class_event({"type": "refused", "message": sentence(str(e))}))
        subscription = await store.subscribe(session.code)
    except Busy as e:
        return stream_of(away(str(e)))
    return stream_of(follow(request, session.code, subscription, sid, connected))


def stream_of(body: str | AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(iter([body]) if isinstance(body, str) else body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def away(message: str) -> str:
    """The store does not answer: the sentence, and how soon the browser should try again."""
    return f"retry: {RETRY_MS}\n" + class_event({"type": "away", "message": sentence(message)})


async def follow(request: Request, code: str, subscription, sid: str | None, connected: float) -> AsyncIterator[str]:
    store = store_of(request)
    pending: asyncio.Future | None = None
    try:
        session = await store.get(code)  # read after subscribing: nothing falls between the two
        if session is None:
            yield class_event({"type": "ended", "code": code})
            return
        yield class_event(snapshot(session, await answers(request, session), "hello"))
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(subscription))
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_S)
            if not done:
                if await store.get(code) is None:  # expired while quiet
                    yield class_event({"type": "ended", "code": code})
                    return
                yield ": heartbeat\n\n"
                continue
            event, pending = pending.result(), None
            yield class_event(event)
            if event.get("type") == "ended":
                return
    except Busy as e:
        yield away(str(e))  # the store stopped answering (Redis away): the browser reconnects in a moment
    finally:
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
