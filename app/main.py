"""The FastAPI app factory. The lifespan starts the engine once; every request reuses it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.config import Settings
from app.engine import Engine
from app.routes import api

ROOT = Path(__file__).resolve().parent.parent


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the app. Pass an already-loaded engine (tests, `python -m app`), or it loads at start-up."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        eng = engine or Engine.load(settings)
        app.state.engine = eng
        eng.start()
        try:
            yield
        finally:
            eng.stop()

    app = FastAPI(
        title="Deep Dive",
        summary="See how a GPT-2 language model works, stage by stage.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    app.include_router(api.router)
    return app
