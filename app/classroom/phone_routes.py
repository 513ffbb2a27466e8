"""The students' class routes (a random id in a cookie scoped to /class/{code}; no accounts):

  GET  /join, POST /join           the join form (/join?code=... from the QR code)
  GET  /class/{code}               the phone's page; GET /class/{code}/phone: its content, refreshed on events
  POST /class/{code}/guess         a guess for the open round (text, or option in choices mode)

The join page shows its refusals in the page; the others are text/plain sentences with a 4xx status.
"""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.classroom import codes
from app.classroom.sessions import (STUDENT_COOKIE, Refusal, answers, client_of, find, gone, limits, live, member,
                                    not_joined, publish_counts, student_of)
from app.classroom.state import (GuessError, Session, clean_nickname, first_token_only, leaderboard, losses,
                                 match_guess, phone_key)
from app.classroom.store.base import StoreError, StoreFull
from app.classroom.teacher import gone_sentence, reveal_rows, store_of
from app.deps import EngineDep
from app.security import ModelTurn
from app.templating import partial, render, sentence

router = APIRouter(include_in_schema=False)
Field = Annotated[str, Form()]


def page(request: Request, status: int = 200, **context) -> HTMLResponse:
    """join.html inside the site's layout (it belongs to the Inference stage, and a phone goes no further)."""
    return render(request, "join.html", "inference", status=status,
                  **{"next_stage": None, "error": None, "code": "", "nickname": "", "phone": None, **context})


@router.get("/join", response_class=HTMLResponse)
async def join_form(request: Request, code: str = ""):
    return page(request, code=codes.normal_code(code) or "")


@router.post("/join", response_class=HTMLResponse)
async def join(request: Request, code: Field = "", nickname: Field = ""):
    canonical = codes.normal_code(code)
    shown = {"code": code[:10], "nickname": nickname[:40]}
    if canonical is None:
        return page(request, 422, error=f"A join code is {codes.CODE_LENGTH} letters and digits, as your teacher's "
                                        f"screen shows (for example {codes.EXAMPLE}). Check it and try again.", **shown)
    try:
        nickname = clean_nickname(nickname)  # once, here: the store keeps the cleaned name, the cookie only the id
    except GuessError as e:
        return page(request, 422, error=str(e), **shown)
    client, buckets = client_of(request), limits(request).joins
    if not buckets.take(client, time.monotonic()):
        return page(request, 429, error=sentence(
            "Too many phones joined from your network just now; wait "
            f"{buckets.wait_s(client, time.monotonic())} s and press Join again"), **shown)
    try:
        if await find(request, canonical) is None:
            return page(request, 404, error=str(gone(canonical)), **shown)
    except Refusal as e:
        return page(request, e.status, error=str(e), **shown)
    sid = codes.new_student_id()  # the cookie is scoped to the class's pages: a join never sees an earlier one
    try:
        await store_of(request).add_student(canonical, sid, nickname)
    except StoreFull as e:
        return page(request, 429, error=str(e), **shown)
    except StoreError as e:
        return page(request, 404, error=sentence(str(e)), **shown)
    await publish_counts(request, canonical)
    response = RedirectResponse(f"/class/{canonical}", status_code=303)
    response.set_cookie(STUDENT_COOKIE, sid, httponly=True, samesite="lax", path=f"/class/{canonical}")
    return response



async def phone_context(request: Request, session: Session, sid: str) -> dict:
    store = store_of(request)
    mine = (await store.guesses(session.code, session.round.no)).get(sid) if session.round else None
    last = session.played[-1] if session.played else None
    last_guess = None
    if last is not None:
        guessed = (await store.guesses(session.code, last.no)).get(sid)
        last_guess = next((b for b in last.histogram if b.id == guessed), None)
    texts = request.app.state.engine.texts
    return {"session": session, "student": session.students[sid], "mine": None if mine is None else texts[mine],
            "mine_id": mine,
            "last": last, "last_guess": last_guess, "rows": reveal_rows(last) if last else [],
            "losses": losses(session.played), "board": leaderboard(session), "answers": await answers(request, session),
            "vocab": request.app.state.engine.info().vocab_size, "seen": phone_key(session)}


@router.get("/class/{code}", response_class=HTMLResponse)
async def phone_page(request: Request, code: str):
    canonical = codes.normal_code(code)
    try:
        session = await find(request, code)
    except Refusal as e:
        return page(request, e.status, error=str(e), code=canonical or "")
    if session is None:
        said = await gone_sentence(request, canonical, known=student_of(request) is not None) if canonical else None
        return page(request, 404, error=said or str(gone(code)), code=canonical or "")
    sid = student_of(request)
    if sid is None or sid not in session.students:
        return RedirectResponse("/join?" + urlencode({"code": session.code}), status_code=303)
    return page(request, phone=await phone_context(request, session, sid))


@router.get("/class/{code}/phone", response_class=HTMLResponse)
async def phone_view(request: Request, code: str, seen: str = ""):
    """The phone's view, refreshed on events: 204 (htmx swaps nothing) when it would be the one the phone shows
    (`seen`, its phone_key). A session that ended, or a phone that lost its place, is a view too (a 200 with its
    sentence): the phone shows it, and the console stays clean."""
    canonical = codes.normal_code(code)
    session = await find(request, code)
    sid = student_of(request)
    if session is None:
        said = await gone_sentence(request, canonical, known=sid is not None) if canonical else str(gone(code))
        return partial(request, "partials/_phone.html", ended=said)
    if sid is None or sid not in session.students:
        return partial(request, "partials/_phone.html", ended=sentence(not_joined(session.code)),
                       rejoin=session.code)
    if seen == phone_key(session):
        return Response(status_code=204)
    return partial(request, "partials/_phone.html", phone=await phone_context(request, session, sid))


@router.post("/class/{code}/guess", dependencies=[ModelTurn], response_class=HTMLResponse)
async def guess(request: Request, engine: EngineDep, code: str, text: Field = "", option: Field = "",
                round_no: Annotated[str, Form(alias="round")] = ""):
    session, sid = await member(request, code)
    guesses = limits(request).guesses
    if not guesses.take(f"{session.code}/{sid}", time.monotonic()):
        raise Refusal(429, f"Slow down: at most {guesses.rate.per_s:g} guesses a second. This one was not counted; "
                           "your last guess before it still counts")
    rnd = session.round
    if rnd is None or (round_no and round_no != str(rnd.no)):
        raise Refusal(409, "No round is open now: wait for your teacher to open the next one")
    if rnd.mode == "choices":
        chosen = next((o for o in rnd.options if str(o.id) == option), None)
        if chosen is None:
            raise Refusal(422, "Pick one of the options shown on your screen")
        token = chosen.id
    else:
        try:
            token = match_guess(text, engine.tokenizer.encode, "".join(session.stepper.pieces), engine.token_bytes)
        except GuessError as e:
            raise Refusal(422, str(e)) from None
    await store_of(request).put_guess(session.code, rnd.no, sid, token)
    await publish_counts(request, session.code)
    if rnd.mode == "choices":  # the whole view, so the chosen option shows as chosen
        session = await live(request, session.code)
        return partial(request, "partials/_phone.html", phone=await phone_context(request, session, sid))
    said = engine.texts[token]
    return partial(request, "partials/_phone.html", said=said, typed=text.strip() if first_token_only(text, said) else "")

