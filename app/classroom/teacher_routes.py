"""The teacher's class routes (the browser holding the secret cookie, app/classroom/teacher.py):

  POST /class                      start a session from the stepper's state; back to the Inference page
  POST /class/{code}/round         open a round (mode: typed or choices)
  POST /class/{code}/reveal        the class's guesses beside the model's; the chosen token joins the text
  POST /class/{code}/leaderboard   show (show=1) or hide the nickname leaderboard
  POST /class/{code}/end           end the session
  GET  /class/{code}/panel         the class panel (the teacher's page refreshes it on events)
  GET  /class/{code}/rounds.csv    the rounds played
"""

from __future__ import annotations

import random
import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.classroom import codes, rounds
from app.classroom.sessions import (Refusal, answers, client_of, end_session, find, gone, lead, led_by_this_browser,
                                    limits, publish_state, saved)
from app.classroom.state import Session, missed_reveal, panel_key
from app.classroom.store.base import StoreError, StoreFull
from app.classroom.teacher import (COOKIE, cookie_parts, cookie_value, gone_sentence, panel, start_context, stepper_of,
                                   store_of, teacher_session)
from app.config import Settings
from app.deps import EngineDep, Number
from app.security import ModelTurn
from app.templating import partial
from app.views.csv_files import csv_file, num
from app.views.stepper import dice_of, format_steps, parse_steps, state_url
from app.views.stepping import LocalSteps

router = APIRouter(include_in_schema=False)
Field = Annotated[str, Form()]


async def panel_response(request: Request, session: Session, apply_steps: bool = False) -> HTMLResponse:
    """The class panel, swapped in whole whatever the control's own target (that one shows refusals)."""
    response = partial(request, "partials/_class.html", classroom=await panel(request, session, apply_steps))
    response.headers.update({"HX-Retarget": "#class-panel", "HX-Reswap": "outerHTML"})
    return response


def go_to(request: Request, url: str) -> Response:
    """A redirect: htmx follows HX-Redirect with a full page load, a plain form post follows 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.post("/class")
async def start(request: Request, engine: EngineDep, prompt: Field = "", steps: Field = "",
                temperature: Number = None, top_k: Number = None, top_p: Number = None, seed: Number = None,
                n: Number = None, teacher_key: Field = ""):
    """Start a session from the stepper's state (the Inference form's fields); an earlier one of this browser ends.
    With DEEPDIVE_TEACHER_KEY set, only a teacher who types it may."""
    settings: Settings = request.app.state.settings
    client, buckets = client_of(request), limits(request).starts
    if not buckets.take(client, time.monotonic()):
        raise Refusal(429, "This computer has started several class sessions in the last few minutes, the most it "
                           f"may; use the one open, or try again in {buckets.wait_s(client, time.monotonic())} s")
    if settings.teacher_key and not codes.key_matches(teacher_key, settings.teacher_key):
        raise Refusal(403, "Starting a class session on this server needs the teacher key (DEEPDIVE_TEACHER_KEY, "
                           "set by whoever runs the server): type it beside the button" if not teacher_key else
                           "That teacher key is not this server's: check it with whoever runs the server")
    if len(prompt) > settings.max_text_chars:
        raise Refusal(413, f"The prompt is {len(prompt):,} characters; a class session takes at most "
                           f"{settings.max_text_chars:,}: shorten it")
    store = store_of(request)
    dice = dice_of(temperature, top_k, top_p, seed, n)
    model = LocalSteps(engine)
    taken = parse_steps(steps, model) or []
    url = state_url(prompt, format_steps(taken, model), dice)
    steps_text = ".".join(f"{t.how}{t.token}" for t in taken)
    old = await teacher_session(request)
    if old is not None:
        await end_session(request, old)
    secret, now = codes.new_secret(), time.time()
    for _ in range(20):  # 8 million codes, at most a few dozen in use: a clash is rare, twenty in a row never
        session = Session(code=codes.new_code(), secret_hash=codes.secret_hash(secret), created=now, active=now,
                          stepper=stepper_of(request, prompt, dice, steps_text, url))
        try:
            await store.create(session)
            break
        except StoreFull as e:
            raise Refusal(429, str(e)) from None
        except StoreError:
            continue
    else:
        raise Refusal(503, "No free join code was found; try again in a moment")
    response = go_to(request, url)
    response.set_cookie(COOKIE, cookie_value(session.code, secret), httponly=True, samesite="strict", path="/")
    return response


@router.get("/class/{code}/panel", response_class=HTMLResponse)
async def class_panel(request: Request, code: str, seen: str = ""):
    """The panel, refreshed on events, and swapped into the panel that asked (a control's answer retargets to
    #class-panel, which htmx cannot do for a panel replaced meanwhile; a detached one takes this harmlessly).
    A 204 (htmx swaps nothing) when it would be the one the page shows (`seen`, its panel_key); a page whose
    panel shows fewer rounds played missed a reveal, and the new panel has the stepper take the revealed step
    (data-apply-steps). When the session is gone, the start form and the sentence saying what became of it
    (a 200: the panel's view of a gone session, not an error). That holds without the teacher's cookie too:
    ending a session deletes it, and the "ended" event's fetch may leave after that answer.
    A miss is a code lookup like any other (find): the view is no way around the limit on guessing codes."""
    session = await find(request, code)
    if session is not None:
        await led_by_this_browser(request, session)
        if seen == panel_key(session, await answers(request, session)):
            return Response(status_code=204)
        return partial(request, "partials/_class.html",
                       classroom=await panel(request, session, missed_reveal(seen, session)))
    canonical = codes.normal_code(code)
    if canonical is None:
        raise gone(code)
    parts = cookie_parts(request)
    known = parts is not None and parts[0] == canonical
    said = await gone_sentence(request, canonical, known=known)
    response = partial(request, "partials/_class.html", classroom=start_context(request, gone=said))
    if known:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.post("/class/{code}/round", dependencies=[ModelTurn], response_class=HTMLResponse)
async def open_round(request: Request, engine: EngineDep, code: str, mode: Field = "typed"):
    session = await lead(request, code)
    if session.round is not None:
        raise Refusal(409, f"Round {session.round.no} is still open: reveal it before opening the next")
    session.round = await rounds.open_round(engine, session, mode, random.Random(), request.app.state.outlooks)
    session.rounds_opened = session.round.no
    await saved(request, session)
    await publish_state(request, session, "round")
    return await panel_response(request, session)


@router.post("/class/{code}/reveal", dependencies=[ModelTurn], response_class=HTMLResponse)
async def reveal(request: Request, engine: EngineDep, code: str):
    session = await lead(request, code)
    if session.round is None:
        raise Refusal(409, "No round is open: open one first, then reveal it")
    guesses = await store_of(request).guesses(session.code, session.round.no)
    logits = request.app.state.outlooks.pop(session.code, session.round.no)
    await rounds.reveal(engine, session, guesses, logits)
    await saved(request, session)
    await publish_state(request, session, "reveal")
    return await panel_response(request, session, apply_steps=True)


@router.post("/class/{code}/leaderboard", response_class=HTMLResponse)
async def show_leaderboard(request: Request, code: str, show: Field = "1"):
    session = await lead(request, code)
    session.leaderboard = show == "1"
    await saved(request, session)
    await publish_state(request, session, "leaderboard")
    return await panel_response(request, session)



@router.post("/class/{code}/end")
async def end(request: Request, code: str):
    session = await lead(request, code)
    await end_session(request, session)
    response = go_to(request, session.stepper.url)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/class/{code}/rounds.csv")
async def rounds_csv(request: Request, code: str):
    session = await lead(request, code)
    header = ["round", "mode", "token", "model probability", "model rank", "guesses", "class probability",
              "class loss", "model loss", "class histogram (token:count)"]
    rows = [[p.no, p.mode, p.token.text, num(p.token.prob), p.token.rank, p.guesses, num(p.class_prob),
             num(p.class_loss), num(p.model_loss), "; ".join(f"{b.text}:{b.count}" for b in p.histogram)]
            for p in session.played]
    return csv_file(f"class-{session.code}", header, rows)
