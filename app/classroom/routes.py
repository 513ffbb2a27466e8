"""Class sessions over HTTP: the teacher's controls, the students' join page, their guesses and the live events.

The teacher (the browser holding the secret cookie, app/classroom/teacher.py):
  POST /class                      start a session from the stepper's state; back to the Inference page
  POST /class/{code}/round         open a round (mode: typed or choices)
  POST /class/{code}/reveal        the class's guesses beside the model's; the chosen token joins the text
  POST /class/{code}/leaderboard   show (show=1) or hide the nickname leaderboard
  POST /class/{code}/end           end the session
  GET  /class/{code}/panel         the class panel (the teacher's page refreshes it on events)
  GET  /class/{code}/rounds.csv    the rounds played
Students (a random id in a cookie scoped to /class/{code}; no accounts):
  GET  /join, POST /join           the join form (/join?code=... from the QR code)
  GET  /class/{code}               the phone's page; GET /class/{code}/phone: its content, refreshed on events
  POST /class/{code}/guess         a guess for the open round (text, or option in choices mode)
Both:
  GET  /class/{code}/events        Server-Sent Events: the current state first, then each change

Refusals are text/plain sentences with a 4xx status (the pages show them in place); the join page
shows its own in the page.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse

from app.classroom import codes, rounds
from app.classroom.limits import ClientLimits
from app.classroom.state import (GuessError, Session, clean_nickname, counts, first_token_only, leaderboard, losses,
                                 match_guess, snapshot)
from app.classroom.store import make_store
from app.classroom.store.base import StoreError, StoreFull, Unavailable
from app.classroom.teacher import (COOKIE, cookie_parts, cookie_value, gone_sentence, panel, reveal_rows, start_context,
                                   stepper_of, store_of, teacher_session)
from app.config import Settings
from app.views.csv_files import csv_file, num
from app.deps import EngineDep, Number
from app.problems import Busy, Problem
from app.errors import JSON_PATHS, error_response
from app.views.stepper import dice_of, format_steps, parse_steps, state_url
from app.views.stepping import LocalSteps
from app.serving.streaming import sse
from app.templating import partial, render, sentence
from app.security import ModelTurn

router = APIRouter(include_in_schema=False)

STUDENT_COOKIE = "deepdive_student"
HEARTBEAT_S = 15.0  # a comment line this often keeps proxies and phones from closing a quiet stream
GRACE_S = 20.0      # a phone that reconnects within this keeps its place (and its guesses)
RETRY_MS = 1000     # how soon a phone's stream reconnects after the store was away (EventSource's `retry:`)
Field = Annotated[str, Form()]


class Refusal(Problem):
    """A request this session cannot take; the message is the sentence the person reads (answered as every
    Problem is: app/errors.py)."""

    def __init__(self, status: int, message: str):
        super().__init__(sentence(message), status)


def install(app: FastAPI, settings: Settings) -> None:
    """The class session routes and the store the settings choose."""
    app.state.classes = make_store(settings)
    app.state.class_limits = ClientLimits()
    app.state.outlooks = rounds.Outlooks(settings.max_class_sessions)
    app.state.leaving = set()  # the tasks that free a closed phone's place after GRACE_S
    app.add_exception_handler(Unavailable, store_away)
    app.include_router(router)


def store_away(request: Request, exc: Unavailable) -> Response:
    """The store (Redis) does not answer: the sentence, in the form the asker shows. A page gets the site's
    page, htmx a text/plain sentence shown in place, the JSON routes their JSON error."""
    path, retry = request.url.path, {"Retry-After": "2"}
    if path.startswith(JSON_PATHS):
        return error_response(path, 503, str(exc), headers=retry)
    if request.headers.get("hx-request"):
        return PlainTextResponse(sentence(str(exc)), status_code=503, headers=retry)
    return page(request, 503, error=sentence(str(exc)))


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def limits(request: Request) -> ClientLimits:
    return request.app.state.class_limits


# ---------------------------------------------------------------- looking sessions up

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
    await store_of(request).publish(session.code, snapshot(session, await answers(request, session), reason))


async def publish_counts(request: Request, code: str) -> None:
    session = await store_of(request).get(code)
    if session is not None:
        await store_of(request).publish(code, counts(session, await answers(request, session)))


async def saved(request: Request, session: Session) -> None:
    if not await store_of(request).save(session):
        raise gone(session.code)


# ---------------------------------------------------------------- the teacher

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
async def class_panel(request: Request, code: str):
    """The panel, refreshed on events. When the session is gone, the start form and the sentence saying what
    became of it (a 200: the panel's view of a gone session, not an error). That holds without the teacher's
    cookie too: ending a session deletes it, and the "ended" event's fetch may leave after that answer.
    A miss is a code lookup like any other (find): the view is no way around the limit on guessing codes."""
    session = await find(request, code)
    if session is not None:
        return await panel_response(request, await led_by_this_browser(request, session))
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


async def end_session(request: Request, session: Session) -> None:
    store = store_of(request)
    await store.publish(session.code, {"type": "ended", "code": session.code})
    await store.delete(session.code)


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


# ---------------------------------------------------------------- students

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


async def member(request: Request, code: str) -> tuple[Session, str]:
    """The session and this phone's student id; a phone that has not joined is refused."""
    session = await live(request, code)
    sid = student_of(request)
    if sid is None or sid not in session.students:
        raise Refusal(403, not_joined(session.code))
    return session, sid


def not_joined(code: str) -> str:
    return f"This phone has not joined class {code}: join at /join?code={code}"


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
            "vocab": request.app.state.engine.info().vocab_size}


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
async def phone_view(request: Request, code: str):
    """The phone's view, refreshed on events. A session that ended, or a phone that lost its place, is a view
    too (a 200 with its sentence): the phone shows it, and the console stays clean."""
    canonical = codes.normal_code(code)
    session = await find(request, code)
    sid = student_of(request)
    if session is None:
        said = await gone_sentence(request, canonical, known=sid is not None) if canonical else str(gone(code))
        return partial(request, "partials/_phone.html", ended=said)
    if sid is None or sid not in session.students:
        return partial(request, "partials/_phone.html", ended=sentence(not_joined(session.code)),
                       rejoin=session.code)
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


# ---------------------------------------------------------------- live events

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
