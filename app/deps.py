"""What routes depend on: the engine the lifespan loaded (app/main.py), for every router, and the form
fields they share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request

from app.serving.engine import Engine


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]

# a number in a form; an empty field is None (the stepper's settings fall back to their defaults)
Number = Annotated[float | None, Form()]
