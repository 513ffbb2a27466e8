"""OpenAI-compatible /v1/completions and /v1/models, so OpenAI's client libraries and tools drive the model.

The legacy completions API: one choice, text or token-id prompts, streaming as
`data: {chunk}` lines ending in `data: [DONE]`, and logprobs (the chosen
token's and the top alternatives' log-probabilities under the model's own
distribution, before temperature and the cuts).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator
from itertools import accumulate

from fastapi import APIRouter, Depends
from starlette.responses import StreamingResponse

from app.schemas import answers as an, requests as rq
from app.deps import EngineDep
from app.serving.engine import Engine
from app.serving.streaming import Generation
from app.problems import Busy
from app.errors import require_json
from app.api import openai_schemas as o
from app.serving.streaming import EventStream, sse
from app.security import ModelTurn
from model.decode.sampling import SamplingParams

router = APIRouter(prefix="/v1", tags=["openai"])
TINY = 1e-45  # float32's smallest probability: a token with probability 0 in float32 gets ln of this


def logprob(p: float) -> float:
    return math.log(max(p, TINY))


class Collector:
    """Builds the choice's text and logprobs from a Generation's events."""

    def __init__(self, prompt_chars: int, logprobs: int | None):
        self.want = logprobs
        self.offset = prompt_chars  # OpenAI's text_offset counts from the start of the prompt
        self.text = ""

    def logprobs(self, ev: an.TokenEvent) -> o.Logprobs | None:
        if self.want is None:
            return None
        top = {c.text: logprob(c.prob) for c in ev.before[:self.want]} if self.want else None
        return o.Logprobs(tokens=[ev.piece], token_logprobs=[logprob(ev.raw_prob)],
                          top_logprobs=[top] if top is not None else None, text_offset=[self.offset])

    def add(self, text: str) -> None:
        self.text += text
        self.offset += len(text)


def merge(into: o.Logprobs | None, more: o.Logprobs | None) -> o.Logprobs | None:
    if into is None or more is None:
        return into or more
    into.tokens += more.tokens
    into.token_logprobs += more.token_logprobs
    if into.top_logprobs is not None and more.top_logprobs is not None:
        into.top_logprobs += more.top_logprobs
    into.text_offset += more.text_offset
    return into


def finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"  # OpenAI says "stop" for end-of-text too


@router.get("/models", response_model=o.ModelList, summary="The one model this server runs")
def models(engine: EngineDep) -> o.ModelList:
    return o.ModelList(data=[o.ModelObject(id=engine.info().name, created=engine.started)])


@router.post("/completions", response_model=o.Completion, dependencies=[Depends(require_json), ModelTurn],
             summary="Complete a prompt (OpenAI-compatible)",
             responses={200: {"description": "a completion; with stream=true, Server-Sent Events of "
                                             "completion chunks ending in `data: [DONE]`",
                              "content": {"text/event-stream": {"itemSchema": {
                                  "type": "object", "required": ["data"],
                                  "properties": {"data": {"type": "string", "description":
                                                          "a Completion chunk as JSON, or [DONE]"}}}}}},
                        **an.error_responses(o.OpenAIError, 413, 415, 422, 503)})
async def completions(req: o.CompletionRequest, engine: EngineDep) -> o.Completion | StreamingResponse:
    """prompt, max_tokens, temperature, top_p, seed, stop, stream and logprobs as in OpenAI's API;
    top_k as in vLLM. max_tokens over the server's cap is refused; a completion that reaches the
    context's end stops there with finish_reason "length"."""
    prompt = req.prompt[0] if isinstance(req.prompt, list) and req.prompt and isinstance(req.prompt[0], str) \
        else req.prompt
    stops = [req.stop] if isinstance(req.stop, str) else req.stop or []
    temperature = 1.0 if req.temperature is None else req.temperature
    params = SamplingParams(temperature=temperature, top_k=req.top_k or 0,
                            top_p=1.0 if req.top_p is None else req.top_p)
    echo, echo_logprobs = await echoed(engine, prompt, req.logprobs) if req.echo else ("", None)
    gen = await engine.generate(prompt, req.max_tokens, params, seed=req.seed, stop=stops, n_top=req.logprobs or 0,
                                limit_name="max_tokens")
    collector = Collector(len(prompt) if isinstance(prompt, str) else len(engine.decode(prompt)),
                          req.logprobs)
    meta = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": engine.info().name}
    if req.stream:
        usage = req.stream_options is not None and req.stream_options.include_usage
        return EventStream(gen, chunks(gen, collector, meta, usage))

    logprobs, done = echo_logprobs, None
    async for ev in gen:
        if isinstance(ev, an.TokenEvent):
            logprobs = merge(logprobs, collector.logprobs(ev))
            collector.add(ev.text)
        else:
            collector.add(ev.text)
            done = ev
    if done.finish_reason in ("timeout", "error"):
        raise Busy(f"The completion was cut short ({done.message}); try again")
    return o.Completion(**meta, choices=[o.CompletionChoice(text=echo + collector.text, logprobs=logprobs,
                                                            finish_reason=finish(done.finish_reason))],
                        usage=usage_of(done))


async def echoed(engine: Engine, prompt: str | list[int], want: int | None) -> tuple[str, o.Logprobs | None]:
    """The prompt as echo gives it back: its text and, when logprobs are asked for, each prompt token's
    log-probability and the model's most likely token there (the first token has neither: nothing predicts it)."""
    text = prompt if isinstance(prompt, str) else engine.decode(prompt)
    if want is None:
        return text, None
    ids = prompt if isinstance(prompt, list) else await engine.encode(prompt)
    spans = (await engine.tokenize(text)).tokens
    if [t.id for t in spans] == ids:
        offsets = [t.start for t in spans]
    else:  # ids that tokenize differently once decoded: each token's own text lengths
        offsets = list(accumulate((len(engine.decode([i])) for i in ids[:-1]), initial=0))
    predictions = (await engine.score(rq.ScoreRequest(ids=ids))).predictions if len(ids) >= 2 else []
    top = [None, *({p.top_text: logprob(p.top_prob)} for p in predictions)][:len(ids)] if want else None
    return text, o.Logprobs(tokens=[engine.texts[i] for i in ids],
                            token_logprobs=[None, *(-p.loss for p in predictions)][:len(ids)],
                            top_logprobs=top, text_offset=offsets)


def usage_of(done: an.DoneEvent) -> o.Usage:
    return o.Usage(prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                   total_tokens=done.prompt_tokens + done.completion_tokens)


async def chunks(gen: Generation, collector: Collector, meta: dict, usage: bool) -> AsyncIterator[str]:
    def chunk(text: str, logprobs: o.Logprobs | None, reason: str | None) -> str:
        c = o.Completion(**meta, choices=[o.CompletionChoice(text=text, logprobs=logprobs, finish_reason=reason)])
        return sse(c.model_dump_json())

    async for ev in gen:
        if isinstance(ev, an.TokenEvent):
            yield chunk(ev.text, collector.logprobs(ev), None)
            collector.add(ev.text)
        elif ev.finish_reason in ("timeout", "error"):
            error = o.OpenAIError(error=o.OpenAIErrorBody(message=f"The completion was cut short ({ev.message})",
                                                          type="server_error"))
            yield sse(error.model_dump_json())
        else:
            yield chunk(ev.text, None, finish(ev.finish_reason))
            if usage:
                u = o.Completion(**meta, choices=[], usage=usage_of(ev))
                yield sse(u.model_dump_json())
    yield sse("[DONE]")
