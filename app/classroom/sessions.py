"""A class session as the routes see it: finding it by its code (a miss spends one of the client's code
lookups), who may act on it (its teacher, a phone that joined), saving it, and telling its followers.

The refusals here are sentences with a 4xx status (Refusal, a Problem: app/errors.py answers them), shown in
place by the pages.
"""

from __future__ import annotations

import time

from fastapi import Request

from app.classroom import codes
from app.classroom.limits import ClientLimits
from app.classroom.state import Session, counts, state_event
from app.classroom.teacher import store_of, teacher_session
from app.problems import Problem
from app.templating import sentence

STUDENT_COOKIE = "deepdive_student"


class Refusal(Problem):
    """A request this session cannot take; the message is the sentence the person reads (answered as every
    Problem is: app/errors.py)."""

    def __init__(self, status: int, message: str):
        super().__init__(sentence(message), status)



def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def limits(request: Request) -> ClientLimits:
    return request.app.state.class_limits



def gone(code: str) -> Refusal:
    return Refusal(404, f"There is no class session with the code {code[:10]} now: it has ended or expired, or the "
                        "code is mistyped. Check the code with your teacher")


async def find(request: Request, code: str) -> Session | None:
    """The live session with this code, or None. A miss costs this client one of its code lookups
    (app/classroom/limits.py): guessing codes at random runs at one a second."""
    canonical = codes.normal_code(code)
    if canonical is None:
        return None
    client, buckets = client_of(request), limits(request).misses
    if not buckets.take(client, time.monotonic()):
        raise Refusal(429, "Too many codes that match no class came from your network just now; check the code "
                           f"with your teacher and try again in {buckets.wait_s(client, time.monotonic())} s")
    session = await store_of(request).get(canonical)
    if session is not None:
        buckets.give_back(client, time.monotonic())
    return session


async def live(request: Request, code: str) -> Session:
    session = await find(request, code)
    if session is None:
        raise gone(code)
    return session


async def lead(request: Request, code: str) -> Session:
    """The session, for its teacher only."""
    return await led_by_this_browser(request, await live(request, code))


async def led_by_this_browser(request: Request, session: Session) -> Session:
    if await teacher_session(request, session.code) is None:
        raise Refusal(403, "Only the teacher's browser, the one that started this session, can do that")
    return session


def student_of(request: Request) -> str | None:
    """The student id from the student cookie, if any. The cookie holds nothing else: the nickname is kept
    by the store, cleaned once at joining (an older cookie's ".nickname" part is ignored)."""
    sid = request.cookies.get(STUDENT_COOKIE, "").partition(".")[0]
    return sid if 8 <= len(sid) <= 40 and sid.replace("-", "").replace("_", "").isalnum() else None


async def answers(request: Request, session: Session) -> int:
    return len(await store_of(request).guesses(session.code, session.round.no)) if session.round else 0


async def publish_state(request: Request, session: Session, reason: str) -> None:
    await store_of(request).publish(session.code, state_event(session, await answers(request, session), reason))


async def publish_counts(request: Request, code: str) -> None:
    session = await store_of(request).get(code)
    if session is not None:
        await store_of(request).publish(code, counts(session, await answers(request, session)))


async def saved(request: Request, session: Session) -> None:
    if not await store_of(request).save(session):
        raise gone(session.code)



async def member(request: Request, code: str) -> tuple[Session, str]:
    """The session and this phone's student id; a phone that has not joined is refused."""
    session = await live(request, code)
    sid = student_of(request)
    if sid is None or sid not in session.students:
        raise Refusal(403, not_joined(session.code))
    return session, sid


def not_joined(code: str) -> str:
    return f"This phone has not joined class {code}: join at /join?code={code}"


async def end_session(request: Request, session: Session) -> None:
    store = store_of(request)
    await store.publish(session.code, {"type": "ended", "code": session.code})
    await store.delete(session.code)

