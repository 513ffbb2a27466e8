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
from urllib.parse import quote, unquote, urlencode

import anyio
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse

from app.classroom import codes, rounds
from app.classroom.state import GuessError, Session, clean_nickname, counts, leaderboard, losses, match_guess, snapshot
from app.classroom.store import StoreError, StoreFull, make_store
from app.classroom.teacher import COOKIE, cookie_value, panel, reveal_rows, stepper_of, store_of, teacher_session
from app.config import Settings
from app.deps import EngineDep
from app.engine import Busy, InputError
from app.routes.downloads import csv_file, num
from app.routes.inference import Number, dice_of, parse_steps, state_url
from app.templating import partial, render, sentence

router = APIRouter(include_in_schema=False)

STUDENT_COOKIE = "deepdive_student"
HEARTBEAT_S = 15.0  # a comment line this often keeps proxies and phones from closing a quiet stream
GRACE_S = 20.0      # a phone that reconnects within this keeps its place (and its guesses)
GUESSES_PER_S = 3.0  # a student's steady rate of guesses; bursts of GUESS_BURST
GUESS_BURST = 5
Field = Annotated[str, Form()]


class Refusal(Exception):
    """A request this session cannot take; the message is the sentence the person reads."""

    def __init__(self, status: int, message: str):
        super().__init__(sentence(message))
        self.status = status


def refused(_: Request, exc: Refusal) -> PlainTextResponse:
    return PlainTextResponse(str(exc), status_code=exc.status)


class GuessLimit:
    """At most GUESSES_PER_S guesses a second per student on average, in bursts of GUESS_BURST (a token bucket)."""

    MAX_KEYS = 20_000  # buckets kept; beyond, the full (idle) ones are dropped

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        tokens, at = self.buckets.get(key, (GUESS_BURST, now))
        tokens = min(GUESS_BURST, tokens + (now - at) * GUESSES_PER_S)
        allowed = tokens >= 1
        self.buckets[key] = (tokens - allowed, now)
        if len(self.buckets) > self.MAX_KEYS:
            idle = now - GUESS_BURST / GUESSES_PER_S
            self.buckets = {k: v for k, v in self.buckets.items() if v[1] > idle}
        return allowed


def install(app: FastAPI, settings: Settings) -> None:
    """The class session routes, the store the settings choose, and the refusal answer."""
    app.state.classes = make_store(settings)
    app.state.guess_limit = GuessLimit()
    app.state.outlooks = rounds.Outlooks(settings.max_class_sessions)
    app.state.leaving = set()  # the tasks that free a closed phone's place after GRACE_S
    app.add_exception_handler(Refusal, refused)
    app.include_router(router)


# ---------------------------------------------------------------- looking sessions up

def gone(code: str) -> Refusal:
    return Refusal(404, f"There is no class session with the code {code[:10]} now: it has ended or expired, or the "
                        "code is mistyped. Check the code with your teacher")


async def live(request: Request, code: str) -> Session:
    canonical = codes.normal_code(code)
    session = await store_of(request).get(canonical) if canonical else None
    if session is None:
        raise gone(code)
    return session


async def lead(request: Request, code: str) -> Session:
    """The session, for its teacher only."""
    session = await live(request, code)
    if await teacher_session(request, session.code) is None:
        raise Refusal(403, "Only the teacher's browser, the one that started this session, can do that")
    return session


def student_of(request: Request) -> tuple[str, str] | None:
    """(student id, nickname) from the student cookie, if any."""
    sid, _, nickname = request.cookies.get(STUDENT_COOKIE, "").partition(".")
    return (sid, unquote(nickname)) if 8 <= len(sid) <= 40 and sid.replace("-", "").replace("_", "").isalnum() else None


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
                n: Number = None):
    """Start a session from the stepper's state (the Inference form's fields); an earlier one of this browser ends."""
    store = store_of(request)
    dice = dice_of(temperature, top_k, top_p, seed, n)
    taken = parse_steps(steps, engine.info().vocab_size, engine.eos_id) or []
    url = state_url(prompt, taken, dice)
    steps_text = ".".join(f"{t.how}{t.id}" for t in taken)
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
    return await panel_response(request, await lead(request, code))


@router.post("/class/{code}/round", response_class=HTMLResponse)
async def open_round(request: Request, engine: EngineDep, code: str, mode: Field = "typed"):
    session = await lead(request, code)
    if session.round is not None:
        raise Refusal(409, f"Round {session.round.no} is still open: reveal it before opening the next")
    session.round = await model_work(rounds.open_round(engine, session, mode, random.Random(),
                                                       request.app.state.outlooks))
    session.rounds_opened = session.round.no
    await saved(request, session)
    await publish_state(request, session, "round")
    return await panel_response(request, session)


@router.post("/class/{code}/reveal", response_class=HTMLResponse)
async def reveal(request: Request, engine: EngineDep, code: str):
    session = await lead(request, code)
    if session.round is None:
        raise Refusal(409, "No round is open: open one first, then reveal it")
    guesses = await store_of(request).guesses(session.code, session.round.no)
    logits = request.app.state.outlooks.pop(session.code, session.round.no)
    await model_work(rounds.reveal(engine, session, guesses, logits))
    await saved(request, session)
    await publish_state(request, session, "reveal")
    return await panel_response(request, session, apply_steps=True)


async def model_work(work):
    """A round's model work, or its refusal as a sentence (a busy model is 503, as on every page)."""
    try:
        return await work
    except InputError as e:
        raise Refusal(e.status, str(e)) from None
    except Busy as e:
        raise Refusal(503, f"The model is busy ({e}). Try again in a moment") from None


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
        return page(request, 422, error="A join code is 5 letters and digits, as your teacher's screen shows "
                                        "(for example ACD34). Check it and try again.", **shown)
    try:
        nickname = clean_nickname(nickname)
    except GuessError as e:
        return page(request, 422, error=str(e), **shown)
    store = store_of(request)
    if await store.get(canonical) is None:
        return page(request, 404, error=str(gone(canonical)), **shown)
    known = student_of(request)
    sid = known[0] if known else codes.new_student_id()
    try:
        await store.add_student(canonical, sid, nickname)
    except StoreFull as e:
        return page(request, 429, error=str(e), **shown)
    except StoreError as e:
        return page(request, 404, error=sentence(str(e)), **shown)
    await publish_counts(request, canonical)
    response = RedirectResponse(f"/class/{canonical}", status_code=303)
    response.set_cookie(STUDENT_COOKIE, f"{sid}.{quote(nickname, safe='')}", httponly=True, samesite="lax",
                        path=f"/class/{canonical}")
    return response


async def member(request: Request, code: str) -> tuple[Session, str]:
    """The session and this phone's student id; a phone that has not joined is refused."""
    session = await live(request, code)
    student = student_of(request)
    if student is None or student[0] not in session.students:
        raise Refusal(403, f"This phone has not joined class {session.code}: join at /join?code={session.code}")
    return session, student[0]


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
            "last": last, "last_guess": last_guess, "rows": reveal_rows(last) if last else [],
            "losses": losses(session.played), "board": leaderboard(session), "answers": await answers(request, session),
            "vocab": request.app.state.engine.info().vocab_size}


@router.get("/class/{code}", response_class=HTMLResponse)
async def phone_page(request: Request, code: str):
    canonical = codes.normal_code(code)
    session = await store_of(request).get(canonical) if canonical else None
    if session is None:
        return page(request, 404, error=str(gone(code)), code=canonical or "")
    student = student_of(request)
    if student is None or student[0] not in session.students:
        return RedirectResponse("/join?" + urlencode({"code": session.code}), status_code=303)
    return page(request, phone=await phone_context(request, session, student[0]))


@router.get("/class/{code}/phone", response_class=HTMLResponse)
async def phone_view(request: Request, code: str):
    session, sid = await member(request, code)
    return partial(request, "partials/_phone.html", phone=await phone_context(request, session, sid))


@router.post("/class/{code}/guess", response_class=HTMLResponse)
async def guess(request: Request, engine: EngineDep, code: str, text: Field = "", option: Field = "",
                round_no: Annotated[str, Form(alias="round")] = ""):
    session, sid = await member(request, code)
    if not request.app.state.guess_limit.allow(f"{session.code}/{sid}", time.monotonic()):
        raise Refusal(429, f"Slow down: at most {GUESSES_PER_S:g} guesses a second. Your latest guess counts")
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
            token = match_guess(text, engine.tokenizer.encode, "".join(session.stepper.pieces))
        except GuessError as e:
            raise Refusal(422, str(e)) from None
    await store_of(request).put_guess(session.code, rnd.no, sid, token)
    await publish_counts(request, session.code)
    return partial(request, "partials/_phone.html", said=engine.texts[token])


# ---------------------------------------------------------------- live events

def sse(event: dict) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


@router.get("/class/{code}/events")
async def events(request: Request, code: str):
    """The session's events as Server-Sent Events, for its teacher and its students; the first is the present."""
    session = await live(request, code)
    student = student_of(request)
    is_teacher = await teacher_session(request, session.code) is not None
    if not is_teacher and (student is None or student[0] not in session.students):
        raise Refusal(403, f"Join class {session.code} first, at /join?code={session.code}")
    store = store_of(request)
    sid = None if is_teacher or student is None else student[0]
    connected = time.time()
    if sid:
        try:
            await store.add_student(session.code, sid, student[1], now=connected)  # a reconnect keeps its place
        except StoreError as e:
            raise Refusal(429 if isinstance(e, StoreFull) else 404, str(e)) from None
    subscription = await store.subscribe(session.code)
    return StreamingResponse(follow(request, session.code, subscription, sid, connected),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def follow(request: Request, code: str, subscription, sid: str | None, connected: float) -> AsyncIterator[str]:
    store = store_of(request)
    pending: asyncio.Future | None = None
    try:
        session = await store.get(code)  # read after subscribing: nothing falls between the two
        if session is None:
            yield sse({"type": "ended", "code": code})
            return
        yield sse(snapshot(session, await answers(request, session), "hello"))
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(subscription))
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_S)
            if not done:
                if await store.get(code) is None:  # expired while quiet
                    yield sse({"type": "ended", "code": code})
                    return
                yield ": heartbeat\n\n"
                continue
            event, pending = pending.result(), None
            yield sse(event)
            if event.get("type") == "ended":
                return
    except Busy:
        return  # the store stopped answering (Redis down): the stream ends, and the phone reconnects
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
