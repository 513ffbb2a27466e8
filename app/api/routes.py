"""/api/* JSON endpoints: thin wrappers over the Engine, which checks and schedules the work."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from app.schemas import answers as an, fields as fl, requests as rq
from app.deps import EngineDep
from app.serving.live import LiveDep
from app.serving.sources import LIVE, GenerateRequest, SourcesDep, as_sse
from app.serving.streaming import EventStream
from app.errors import require_json
from app.security import ModelTurn

router = APIRouter()


async def json_response(model: BaseModel) -> Response:
    """Serialize in a worker thread: an answer may run to megabytes, and the event loop serves everyone."""
    return Response(await anyio.to_thread.run_sync(model.model_dump_json), media_type="application/json")

JSON_BODY = [Depends(require_json)]
MODEL_JSON_BODY = [*JSON_BODY, ModelTurn]  # a JSON body, then a turn on the model
ERRORS = an.error_responses(an.ApiError, 413, 415, 422)
MODEL_ERRORS = an.error_responses(an.ApiError, 413, 415, 422, 503)


@router.get("/healthz", tags=["health"], summary="Liveness check")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/api/model", tags=["model"], response_model=an.ModelInfo, summary="The loaded model")
def model_info(engine: EngineDep) -> an.ModelInfo:
    """Name, source, parameter count by part, shape (layers, heads, width, context, vocabulary)
    and the model card's summary."""
    return engine.info()


@router.post("/api/tokenize", tags=["tokens"], response_model=an.TokenizeResponse, dependencies=JSON_BODY,
             responses=ERRORS, summary="Split a text into tokens")
async def tokenize(req: rq.TokenizeRequest, engine: EngineDep) -> Response:
    """Each token's id, text, bytes and the characters of the input it covers, and the counts."""
    return await json_response(await engine.tokenize(req.text))


@router.post("/api/detokenize", tags=["tokens"], response_model=an.DetokenizeResponse, dependencies=JSON_BODY,
             responses=ERRORS, summary="Turn token ids back into text")
async def detokenize(req: rq.DetokenizeRequest, engine: EngineDep) -> Response:
    return await json_response(await engine.detokenize(req.ids))


@router.post("/api/bpe", tags=["tokens"], response_model=an.BpeResponse, dependencies=JSON_BODY,
             responses=ERRORS, summary="The byte-pair merges that tokenize a text, step by step")
async def bpe(req: rq.BpeRequest, engine: EngineDep) -> Response:
    """The text is split by GPT-2's regex into pretokens, each starts as single bytes, and the
    merge with the lowest rank is applied everywhere it fits, until no merge applies."""
    return await json_response(await engine.bpe(req.text))


@router.get("/api/vocab", tags=["tokens"], response_model=an.VocabPage, responses=an.error_responses(an.ApiError, 422),
            summary="Browse and search the vocabulary")
async def vocab(engine: EngineDep,
                q: Annotated[str, Query(max_length=100, description="text the entry contains (case-sensitive), "
                                                                    "or an id", examples=["ing"])] = "",
                offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
                limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
    return await json_response(await engine.vocab(fl.whole_characters(q), offset, limit))


@router.post("/api/next-token", tags=["model"], response_model=an.NextTokenResponse, dependencies=MODEL_JSON_BODY,
             responses=MODEL_ERRORS, summary="The distribution over the next token")
async def next_token(req: rq.NextTokenRequest, engine: EngineDep) -> Response:
    """The top-n tokens with probability and logit, before and after temperature, top-k and top-p;
    the entropy; and the rank and probability of any tokens named in `targets`. With `interventions`,
    the distribution of the model with those heads, neurons, attentions or MLPs switched off."""
    return await json_response(await engine.next_token(req))


@router.post("/api/score", tags=["model"], response_model=an.ScoreResponse, dependencies=MODEL_JSON_BODY,
             responses=MODEL_ERRORS, summary="How well the model predicts each token of a text")
async def score(req: rq.ScoreRequest, engine: EngineDep) -> Response:
    """Training is next-token classification: each actual next token's probability and loss
    (−ln p) under the model, their mean (the training loss) and the perplexity."""
    return await json_response(await engine.score(req))


@router.post("/api/activations", tags=["model"], response_model=an.ActivationsResponse, dependencies=MODEL_JSON_BODY,
             responses=MODEL_ERRORS, summary="Inside one forward pass: what the caller selects")
async def activations(req: rq.ActivationsRequest, engine: EngineDep) -> Response:
    """Residual-stream norms per state and position; attention patterns of chosen layers and heads;
    the top MLP neurons per layer and position; the logit lens. Only what is asked for is sent."""
    return await json_response(await engine.activations(req))


@router.post("/api/patch", tags=["model"], response_model=an.PatchResponse, dependencies=MODEL_JSON_BODY,
             responses=MODEL_ERRORS, summary="Activation patching: where a prompt keeps what decides the answer")
async def patch(req: rq.PatchRequest, engine: EngineDep) -> Response:
    """Runs the corrupted prompt with the clean prompt's residual stream written in where it enters each
    block, at each position, one cell at a time, and reports logit(right) − logit(wrong) at the last
    position for every (block, position). A cell near the clean value marks where the information that
    decides the answer sits. Both prompts must split into the same number of tokens, and each answer
    must be one token (its text or its id); all cells run as one batch."""
    return await json_response(await engine.patch(req))


SSE_EXAMPLE = (
    'event: token\ndata: {"step":0,"id":612,"text":" there","piece":" there","prob":0.41,"raw_prob":0.33,'
    '"entropy":2.1,"before":[],"after":[]}\n\n'
    'event: done\ndata: {"finish_reason":"length","prompt_tokens":4,"completion_tokens":1,"text":"",'
    '"timings":{"first_token_ms":12.5,"total_ms":13.0,"tokens_per_second":76.9},"message":null}\n\n'
)


# each event, as OpenAPI 3.2's itemSchema describes the items of a stream
GENERATE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["prompt", "token", "done"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"anyOf": [{"$ref": "#/components/schemas/PromptParts"},
                                             {"$ref": "#/components/schemas/TokenEvent"},
                                             {"$ref": "#/components/schemas/SourceToken"},
                                             {"$ref": "#/components/schemas/DoneEvent"}]}},
    },
}


@router.post("/api/generate", tags=["model"], dependencies=MODEL_JSON_BODY, response_class=StreamingResponse,
             summary="Sample a continuation, streamed as Server-Sent Events",
             responses={200: {"description": "`event: token` per token (data: TokenEvent), then one "
                                             "`event: done` (data: DoneEvent)",
                              "content": {"text/event-stream": {"itemSchema": GENERATE_EVENT,
                                                                "example": SSE_EXAMPLE}}},
                        **MODEL_ERRORS})
async def generate(req: GenerateRequest, sources: SourcesDep) -> StreamingResponse:
    """One event per token (step, id, text, probability, top alternatives), then a final event
    with the finish reason ("length", "eos", "stop"), token counts and timings. Joined, the
    events' `text` fields (the done event's too) are the decoded output up to any stop text.
    Generation ends at the context's end with reason "length", and stops within one step when
    the client disconnects. `model` picks which of the server's models writes (the pages' `model=`:
    local, second, remote, live); one on a serving engine sends SourceToken events, which leave out what
    that engine does not say. With `chat` on a model whose file has a chat template, a first `event: prompt`
    gives the prompt as the template wrote it (PromptParts)."""
    stream = await sources.get(req.model).generate(req)
    return EventStream(stream, as_sse(stream))


@router.get("/api/training/live", response_model=an.LiveRunInfo, tags=["training"], summary="The live training run")
async def run_info(live: LiveDep, sources: SourcesDep) -> an.LiveRunInfo:
    """The live run's state, curve and samples (the Training page's numbers)."""
    job = live.job
    if job is None or job.state == "closed":
        return an.LiveRunInfo(state="idle")
    loaded = sources.all.get(LIVE)
    return an.LiveRunInfo(state=job.state, why=job.why, text=job.plan.text_name, size=job.plan.size, who=job.who,
                          parameters=job.ready.get("parameters"), baselines=job.ready.get("baselines", {}),
                          points=job.points, samples=sorted(job.samples, key=lambda s: s["step"]),
                          model=loaded.name if loaded is not None else None)
