"""The teacher's side of a class session: the secret cookie, the stepper hook and the class panel's context.

The teacher's browser holds `deepdive_teacher` = "<code>.<secret>" (HttpOnly, SameSite=Strict), set
when the session is created; the store keeps only the secret's hash. The Inference page calls
`follow` each time it renders: with a live session's cookie, the stepper's new state is saved and
sent to every follower, so each step the teacher takes reaches every phone.
"""

from __future__ import annotations

import re

from dataclasses import asdict
from typing import Any

from fastapi import Request
from markupsafe import Markup

from app.classroom import codes
from app.classroom.join_url import join_url, loopback_only, qr_svg, start_command
from app.classroom.state import Played, Session, Stepper, leaderboard, losses, panel_key, state_event
from app.classroom.store.base import Store, Unavailable
from app.deps import get_engine
from app.problems import sentence

COOKIE = "deepdive_teacher"
REVEAL_ROWS = 10  # tokens in a reveal's figure: the class's and the model's favourites together


def store_of(request: Request) -> Store:
    return request.app.state.classes


def cookie_value(code: str, secret: str) -> str:
    return f"{code}.{secret}"


def cookie_parts(request: Request) -> tuple[str, str] | None:
    code, _, secret = request.cookies.get(COOKIE, "").partition(".")
    return (code, secret) if codes.normal_code(code) == code and secret else None


async def teacher_session(request: Request, code: str | None = None) -> Session | None:
    """The live session whose secret this browser holds (that one, when a code is given), else None."""
    parts = cookie_parts(request)
    if parts is None or (code is not None and parts[0] != code):
        return None
    session = await store_of(request).get(parts[0])
    return session if session and codes.secret_matches(parts[1], session.secret_hash) else None


def stepper_of(request: Request, prompt: str, dice: Any, steps_text: str, url: str) -> Stepper:
    texts = get_engine(request).texts
    # a step is its letter, the token id, then the settings it was taken under (app/views/stepper.py)
    pieces = [prompt, *(texts[int(re.match(r"[a-z](\d+)", p)[1])] for p in steps_text.split(".") if p)] if prompt else []
    return Stepper(prompt=prompt, steps=steps_text, url=url, pieces=pieces, **asdict(dice))


async def follow(request: Request, prompt: str, dice: Any, context: dict) -> dict:
    """The Inference page's hook: with the teacher's cookie of a live session, save the stepper's state and
    tell the class. A changed text closes an open round (its guesses were for the text before). Returns the
    class panel's context: the panel, or the start form (with what became of this browser's last session).
    While the store is away the stepper works on, and the panel says why it is missing."""
    try:
        session = await teacher_session(request)
        if session is None:
            parts = cookie_parts(request)
            said = await gone_sentence(request, parts[0], known=True) if parts else None
            return start_context(request, gone=said)
        new = stepper_of(request, prompt, dice, context["steps_text"], context["url"])
        if new != session.stepper:
            if session.round and (new.prompt, new.steps) != (session.stepper.prompt, session.stepper.steps):
                session.round = None
            session.stepper = new
            store = store_of(request)
            if await store.save(session):
                answers = len(await store.guesses(session.code, session.round.no)) if session.round else 0
                await store.publish(session.code, state_event(session, answers, "step"))
        return await panel(request, session)
    except Unavailable as e:
        parts = cookie_parts(request)
        return {**start_context(request), "away": sentence(str(e)), "code": parts[0] if parts else None}


def start_context(request: Request, gone: str | None = None) -> dict:
    """The start form's context: whether a teacher key is asked, whether phones can reach this server at all
    (and the command that lets them), and what became of this browser's last session."""
    settings = request.app.state.settings
    return {"session": None, "gone": gone, "away": None, "code": None, "needs_key": bool(settings.teacher_key),
            "loopback": loopback_only(settings), "command": start_command(settings)}


async def gone_sentence(request: Request, code: str, known: bool) -> str:
    """What became of a session that is no longer there, for a browser that knew it (its teacher, a phone that
    joined it): ended, expired, or lost (the store forgot it: Redis restarted without keeping its data)."""
    settings = request.app.state.settings
    fate = await store_of(request).fate(code)
    if fate == "ended":
        return f"Class session {code} has ended: the teacher closed it."
    if fate == "expired":
        return f"Class session {code} expired after {settings.class_ttl_s / 3600:g} hours without activity."
    if known:
        return (f"Class session {code} was lost: the server no longer has it (it restarted without keeping its "
                "sessions). The teacher can start a new one; the phones join again with the new code.")
    return (f"There is no class session with the code {code} now: it has ended or expired, or the code is "
            "mistyped. Check the code with your teacher.")


async def panel(request: Request, session: Session, apply_steps: bool = False) -> dict:
    """What the class panel shows: the code, the join address and its QR code, the counts, the last reveal.
    When the server listens on loopback only, phones cannot reach it: no QR code, and the command instead."""
    store = store_of(request)
    settings = request.app.state.settings
    url = join_url(request, settings, session.code)
    loopback = loopback_only(settings)
    answers = len(await store.guesses(session.code, session.round.no)) if session.round else 0
    last = session.played[-1] if session.played else None
    return {"session": session, "join_url": url, "qr": None if loopback else Markup(qr_svg(url)),
            "answers": answers, "loopback": loopback, "command": start_command(settings),
            "students": len(session.students), "last": last, "rows": reveal_rows(last) if last else [],
            "losses": losses(session.played), "board": leaderboard(session), "apply_steps": apply_steps,
            "vocab": get_engine(request).info().vocab_size, "seen": panel_key(session, answers)}


def reveal_rows(played: Played) -> list[dict]:
    """The reveal's figure: the token that came, the model's top tokens and the class's guesses, each with the
    class's share of the guesses and the model's probability; the most popular of either first."""
    n = max(played.guesses, 1)
    rows: dict[int, dict] = {}
    for o in [played.token, *played.top]:
        rows[o.id] = {"id": o.id, "text": o.text, "count": 0, "share": 0.0, "model": o.prob, "rank": o.rank}
    for b in played.histogram:
        rows[b.id] = {"id": b.id, "text": b.text, "count": b.count, "share": b.count / n, "model": b.prob,
                      "rank": b.rank}
    actual = rows.pop(played.token.id)
    others = sorted(rows.values(), key=lambda r: -max(r["share"], r["model"]))[:REVEAL_ROWS - 1]
    return sorted([{**actual, "actual": True}, *({**r, "actual": False} for r in others)],
                  key=lambda r: -max(r["share"], r["model"]))
