"""/api/* JSON endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.engine import Engine

router = APIRouter()


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]


@router.get("/healthz", tags=["health"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/api/model", tags=["model"])
def model_info(engine: EngineDep) -> dict:
    return engine.info()
