"""Schemathesis over the OpenAPI schema: generated requests never get a 5xx or an answer outside the schema.

CI tries 25 requests per operation; SCHEMA_EXAMPLES=N tries N (bench/README.md records a long run).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def app(tiny_checkpoint) -> FastAPI:
    config = Settings(model=str(tiny_checkpoint), threads=1, max_new_tokens=8)
    return create_app(config, Engine.load(config))


# the schema does not depend on the model, so it is read from an app that never starts one
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
# valid requests, and invalid ones: those must get a documented 4xx, never a 5xx
schema.config.generation.update(modes=list(schemathesis.GenerationMode))


@schema.parametrize()
@settings(max_examples=int(os.environ.get("SCHEMA_EXAMPLES", "25")), deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, app: FastAPI) -> None:
    case.call_and_validate(app=app, checks=CHECKS)
