"""The FastAPI app factory. The lifespan starts the engine once; every request reuses it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic.json_schema import models_json_schema

from app import errors, security
from app.schemas import answers as an
from app.serving import sources
from app.classroom import routes as classroom
from app.config import Settings
from app.serving.engine import Engine
from app.serving.live import LIVE_PATH, LIVE_BODY_BYTES, LiveTraining
from app.api import docs, openai
from app.api import routes as api
from app.pages import (ablate, data, downloads, inference, internals, live, overview, patching, playground, tokenizer,
                       training)

ROOT = Path(__file__).resolve().parent.parent


def create_app(settings: Settings | None = None, engine: Engine | None = None, second: Engine | None = None) -> FastAPI:
    """Build the app. Pass already-loaded engines (tests, `python -m app`: the model and settings.second_model),
    or they load at start-up."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        eng = engine or Engine.load(settings)
        app.state.engine = eng
        eng.start()
        try:
            async with sources.opened(settings, eng, second) as app.state.sources:  # the models pages may choose
                app.state.live = LiveTraining(settings, app.state.sources)  # "Train a tiny model now"
                try:
                    yield
                finally:
                    await app.state.live.close()
        finally:
            eng.stop()
            await app.state.classes.close()

    app = FastAPI(
        title="Deep Dive",
        summary="See how a GPT-2 language model works, stage by stage.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's /docs and /redoc load from a CDN; app.api.docs serves a vendored copy
        redoc_url=None,
    )
    app.state.settings = settings
    errors.install(app, settings.max_body_bytes, {LIVE_PATH: LIVE_BODY_BYTES})
    security.install(app, settings)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    app.include_router(api.router)
    app.include_router(openai.router)
    for page in (overview, data, tokenizer, training, playground):
        app.include_router(page.router)
    app.include_router(live.router)
    app.include_router(internals.router)
    app.include_router(internals.styles)
    app.include_router(ablate.router)
    app.include_router(patching.router)
    app.include_router(inference.router)
    app.include_router(docs.router)
    app.include_router(downloads.router)
    classroom.install(app, settings)  # class sessions: their routes and the store
    document_events(app)
    return app


def document_events(app: FastAPI) -> None:
    """Add the SSE event payloads to the schema's components: no route returns them as JSON."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = build()
            events = (sources.PromptParts, an.TokenEvent, sources.SourceToken, an.DoneEvent)
            _, defs = models_json_schema([(m, "serialization") for m in events],
                                         ref_template="#/components/schemas/{model}")
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs["$defs"].items():
                components.setdefault(name, definition)
        return app.openapi_schema

    app.openapi = openapi
