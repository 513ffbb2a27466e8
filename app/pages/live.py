"""Stage 3, training, live: "Train a tiny model now" on the Training page (app/serving/live.py runs the job).

    POST /training/live/start      text (stories, oz or pasted) [pasted], size, minutes: start the one run
    POST /training/live/stop       stop it (no step is lost)
    POST /training/live/continue   minutes: train on from the same step
    GET  /training/live/events     Server-Sent Events: `state` and `progress`, HTML for the page's two parts
    GET  /training/live/checkpoint.zip   the last sitting's weights, tokenizer and card

Its numbers as JSON: GET /api/training/live (app/api/routes.py).

While a class session runs on this server only a teacher's browser starts, stops or continues a run; a run started
from a teacher's browser is that class's: only that browser stops, continues or replaces it, and the class's phones
show its curve.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from app.classroom.codes import normal_code
from app.classroom.teacher import teacher_session
from app.problems import InputError
from app.serving.live import BUDGETS_MIN, MAX_TEXT_BYTES, Job, LiveDep, LiveTraining, Plan, Refused
from app.serving.sources import LIVE, SourcesDep
from app.serving.streaming import sse
from app.templating import Text, templates
from app.views import live as view
from model.training import live as training

router = APIRouter(include_in_schema=False)

SAMPLES = Path(__file__).resolve().parent.parent.parent / "model" / "samples"
TEXTS = {  # key -> (as the page names it, file, documents split at <|endoftext|> lines)
    "stories": ("the children's stories sample (TinyStories)", "tinystories_train.txt"),
    "oz": ("The Wonderful Wizard of Oz (its opening chapters)", "wizard_of_oz_excerpt.txt"),
}
KEEPALIVE_S = 15.0
templates.env.globals["live_budgets"] = BUDGETS_MIN  # the time choices, in the form and in Continue
Number = Annotated[int, Form()]


def built_in(key: str) -> list[str]:
    text = (SAMPLES / TEXTS[key][1]).read_text(encoding="utf-8")
    return [d.strip() for d in text.split("<|endoftext|>") if d.strip()]


def pasted_documents(text: str, size: str) -> list[str]:
    """The teacher's text, checked: a sentence for anything a run cannot use."""
    if not text.strip():
        raise InputError("Paste a text to train on (or choose one of the built-in texts)")
    n = len(text.encode("utf-8"))
    if n > MAX_TEXT_BYTES:
        raise InputError(f"The text is {n:,} bytes; a live run takes at most {MAX_TEXT_BYTES:,} (1 MB): paste less", 413)
    control = sum(1 for c in text if not c.isprintable() and c not in "\n\r\t")
    if "\x00" in text or control > len(text) / 100:
        raise InputError("This looks like binary data, not text: paste a text (a poem, a story, the class's own "
                         "sentences)")
    need = training.min_bytes(size)
    if n < need:
        raise InputError(f"The text is {n:,} bytes; a live run needs at least {need:,}, because a tenth of it is held "
                         "out to test the model on: paste more")
    return [text.replace("\r\n", "\n")]


def choice(value: int, allowed: tuple[int, ...], what: str) -> int:
    if value not in allowed:
        raise InputError(f"{what} must be one of {', '.join(map(str, allowed))} minutes")
    return value


async def who_asks(request: Request) -> tuple[str, str | None]:
    """Who is asking, in words, and the class session this browser teaches, if any."""
    session = await teacher_session(request)
    if session is not None:
        return f"the teacher of class {session.code}", session.code
    return f"a browser at {request.client.host if request.client else 'an unknown address'}", None


async def may_command(request: Request, live: LiveTraining) -> str | None:
    """While a class session runs here, only a teacher's browser starts, stops or continues a run, and a class's run
    takes commands from its own teacher only; returns the class this browser teaches."""
    _, code = await who_asks(request)
    if code is None and await request.app.state.classes.running():
        raise Refused("A class session is running on this server: only the teacher's browser starts, stops or "
                      "continues the live training. This page shows it as it goes", 403)
    job = live.job
    if job is not None and job.class_code is not None and job.class_code != code \
            and await teacher_session_alive(request, job.class_code):
        raise Refused(f"This run belongs to class {job.class_code}: only its teacher's browser can stop, continue "
                      "or replace it", 403)
    return code


async def teacher_session_alive(request: Request, code: str) -> bool:
    return await request.app.state.classes.get(code) is not None


def live_context(live: LiveTraining, sources_all: dict) -> dict:
    job = live.job
    loaded = sources_all.get(LIVE)
    fresh = job is not None and loaded is not None and loaded.engine.loaded.path == job.export
    return view.context(job, fresh)


def state_html(context: dict, watching: bool = False) -> str:
    module = templates.env.get_template("partials/_live.html").module
    return str(module.live_state(context["job"], context.get("state"), context.get("live_loaded"), watching))


def progress_html(context: dict) -> str:
    module = templates.env.get_template("partials/_live.html").module
    if context["job"] is None:
        return ""
    return str(module.live_progress(context["job"], context["figures"], context["curve"], context["samples"],
                                    context["size"]))


@router.post("/training/live/start", response_class=HTMLResponse)
async def start(request: Request, live: LiveDep, sources: SourcesDep, text: Text = "stories", pasted: Text = "",
                size: Text = "tiny", minutes: Number = 3, steps: Annotated[int | None, Form()] = None):
    if size not in training.SIZES:
        raise InputError(f"size must be one of {', '.join(training.SIZES)}")
    choice(minutes, BUDGETS_MIN, "minutes")
    if steps is not None and not 1 <= steps <= 100_000:
        raise InputError("steps must be between 1 and 100,000")
    if text == "pasted":
        name, documents = "a text pasted here", pasted_documents(pasted, size)
    elif text in TEXTS:
        name, documents = TEXTS[text][0], built_in(text)
    else:
        raise InputError(f"text must be one of {', '.join([*TEXTS, 'pasted'])}")
    live.refuse_if_busy()
    code = await may_command(request, live)
    who, _ = await who_asks(request)
    await live.start(Plan(name, documents, size, minutes, steps), who, code)
    return HTMLResponse(state_html(live_context(live, sources.all)))


@router.post("/training/live/stop", response_class=HTMLResponse)
async def stop(request: Request, live: LiveDep, sources: SourcesDep):
    await may_command(request, live)
    await live.stop()
    return HTMLResponse(state_html(live_context(live, sources.all)))


@router.post("/training/live/continue", response_class=HTMLResponse)
async def resume(request: Request, live: LiveDep, sources: SourcesDep, minutes: Number = 3,
                 steps: Annotated[int | None, Form()] = None):
    choice(minutes, BUDGETS_MIN, "minutes")
    await may_command(request, live)
    await live.resume(minutes, steps)
    return HTMLResponse(state_html(live_context(live, sources.all)))


@router.get("/training/live/events")
async def events(request: Request, live: LiveDep, sources: SourcesDep, watching: bool = False, class_code: str = ""):
    """The run as it goes: on every change, the page's two parts as HTML (htmx's SSE extension swaps them in);
    `state` only when it differs from what this page has. A new job is followed as soon as it starts. `watching`:
    no controls (a phone); `class_code`: only that class's run, nothing before it starts (a class's phones)."""

    def followed() -> Job | None:
        job = live.job
        return job if job is None or not class_code or job.class_code == normal_code(class_code) else None

    async def stream():
        sent, sent_state = None, None  # the (job, version) this page shows, and its state part
        while not await request.is_disconnected():
            job = followed()
            if job is not None and sent == (job, job.version):
                try:
                    await asyncio.wait_for(job.changed.wait(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": still here\n\n"
                continue
            if job is None and sent == (None, 0):
                await asyncio.sleep(1.0)  # nothing runs: look again for a run someone starts
                continue
            context = live_context(live, sources.all) if job is not None else {"job": None}
            state = "" if job is None and class_code else state_html(context, watching)
            if state != sent_state:
                yield sse(state, "state")
                sent_state = state
            yield sse(progress_html(context), "progress")
            sent = (job, job.version if job is not None else 0)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/training/live/checkpoint.zip")
async def checkpoint(live: LiveDep, sources: SourcesDep):
    job = live.job
    loaded = sources.all.get(LIVE)
    if job is None or loaded is None:
        raise InputError("No live model has been trained yet: train one, stop it, then download it", 404)
    folder: Path = loaded.engine.loaded.path

    def pack() -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.iterdir()):
                z.write(f, f"{folder.name}/{f.name}")
        return out.getvalue()

    return Response(await anyio.to_thread.run_sync(pack), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="deepdive-{folder.name}.zip"'})
