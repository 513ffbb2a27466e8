"""The models a page can use: the loaded model, a second local model (DEEPDIVE_SECOND_MODEL) and a model on
a serving engine (DEEPDIVE_REMOTE_URL, app/remote.py).

Each is a source that pages ask the same three things, with text rather than token ids, because each
model has its own tokenizer: the next token's most likely candidates, a generation streamed as the
Playground reads it (`event: token` / `event: done`, as /api/generate sends), and each token's
probability in a text. The lifespan (app/main.py) puts a Sources in app.state; routes get it through
app/deps.py and pick the one the URL names (`model=`), the loaded model when it names none.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import Field
from starlette.responses import StreamingResponse

from app import schemas as s
from app.config import Settings
from app.engine import Engine
from app.remote import Finished, RemoteError, RemoteModel
from app.streaming import EventStream, generation_events, sse
from app.templating import si
from model.sampling import SamplingParams

MAIN, SECOND, REMOTE = "local", "second", "remote"  # the values of `model=` in a page's URL


@dataclass(frozen=True)
class Candidate:
    text: str
    prob: float
    whole: bool = True  # False: only part of a UTF-8 character, its text the bytes (\xe2\x80)


@dataclass(frozen=True)
class Scored:
    """One token of a scored text, predicted from the tokens before it."""

    text: str
    prob: float
    loss: float           # -ln prob, in nats
    rank: int | None      # 1 = the model's most likely token; None where the source does not say
    top_text: str         # the model's own most likely token there
    top_prob: float


class GenerateRequest(s.GenerateRequest):
    """/api/generate's request, and which model writes (a key of Sources)."""

    model: str = Field(MAIN, max_length=40)
    chat: bool = Field(False, description="the prompt is a Human/Assistant transcript: a model whose file has a chat "
                                          "template (an instruct model) reads it written out in that template; "
                                          "any other continues it as text")


class LocalSource:
    """A model loaded here: every page works on it, Internals included."""

    remote = False

    def __init__(self, key: str, engine: Engine):
        self.key = key
        self.engine = engine

    @property
    def name(self) -> str:
        return self.engine.info().name

    @property
    def size(self) -> str:
        return f"{si(self.engine.info().parameters['total'])} parameters"

    async def next_token(self, text: str, n: int) -> list[Candidate]:
        r = await self.engine.next_token(s.NextTokenRequest(text=text, n=n))
        return [Candidate(c.text, c.prob) for c in r.before]

    async def generate(self, req: GenerateRequest) -> StreamingResponse:
        """/api/generate's events; a templated chat prompt first sends `event: prompt` with its parts, so the page
        shows the template's special tokens as the model read them."""
        params = SamplingParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
        chat = await self.engine.chat_prompt(req.prompt) if req.chat else None
        gen = await self.engine.generate(req.prompt if chat is None else chat[0], req.max_new_tokens, params,
                                         seed=req.seed, stop=req.stop, n_top=req.n_top)
        events = generation_events(gen)
        return EventStream(gen, events if chat is None else prompt_first(chat[1], events))

    async def score(self, text: str) -> list[Scored]:
        r = await self.engine.score(s.ScoreRequest(text=text, prepend_eos=True))
        return [Scored(p.text, p.prob, p.loss, p.rank, p.top_text, p.top_prob) for p in r.predictions]


async def prompt_first(parts: list[dict], events: AsyncIterator[str]) -> AsyncIterator[str]:
    yield sse(json.dumps({"parts": parts}), "prompt")
    async for event in events:
        yield event


class RemoteSource:
    """A model on a serving engine: distributions and text, but no weights to look inside."""

    key = REMOTE
    remote = True

    def __init__(self, model: RemoteModel, max_new_tokens: int):
        self.model = model
        self.max_new_tokens = max_new_tokens

    @property
    def name(self) -> str:
        return self.model.model or self.model.host

    @property
    def size(self) -> str:
        return f"served by {self.model.host}"

    async def next_token(self, text: str, n: int) -> list[Candidate]:
        if not text:
            raise RemoteError("Type a prompt: the model server continues a text, and this one is empty", 422)
        return [Candidate(a.text, math.exp(a.logprob), a.whole) for a in await self.model.next_token(text, n)]

    async def generate(self, req: GenerateRequest) -> StreamingResponse:
        if req.max_new_tokens > self.max_new_tokens:
            raise RemoteError(f"The field max_new_tokens is {req.max_new_tokens:,}; this server generates at most "
                              f"{self.max_new_tokens:,} tokens per request: ask for fewer", 422)
        pieces = await self.model.stream(req.prompt, req.max_new_tokens, req.temperature, req.top_k, req.top_p,
                                         req.seed, req.stop, req.n_top)
        return StreamingResponse(self.events(pieces, bool(req.stop)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def events(self, pieces: AsyncIterator, stops: bool) -> AsyncIterator[str]:
        """The server's pieces as /api/generate's events. What the server does not say (the chance after the
        settings, the entropy, token ids) is null."""
        started, first, count = time.perf_counter(), None, 0
        reason, prompt_tokens, message = "error", None, None
        try:
            async for p in pieces:
                if isinstance(p, Finished):
                    # OpenAI's "stop" is both a stop text and the end of text; without stop texts it is the latter
                    reason = {"length": "length", "stop": "stop" if stops else "eos"}.get(p.reason, "eos")
                    prompt_tokens = p.prompt_tokens
                    continue
                first = first or time.perf_counter()
                event = {"step": count, "id": None, "text": p.text, "piece": p.text, "prob": None,
                         "raw_prob": None if p.logprob is None else math.exp(p.logprob), "entropy": None,
                         "before": [{"text": a.text, "prob": math.exp(a.logprob)} for a in p.alternatives],
                         "after": []}
                count += 1
                yield sse(json.dumps(event), "token")
        except RemoteError as e:
            message = str(e)
        total = time.perf_counter() - started
        done = {"finish_reason": reason, "prompt_tokens": prompt_tokens, "completion_tokens": count, "text": "",
                "message": message,
                "timings": {"first_token_ms": None if first is None else round((first - started) * 1000, 1),
                            "total_ms": round(total * 1000, 1),
                            "tokens_per_second": round(count / total, 2) if total > 0 else 0.0}}
        yield sse(json.dumps(done), "done")

    async def score(self, text: str) -> tuple[list[Scored], str]:
        """Each token that something predicts, the rank only where it is the top one, and the server's sentence
        on how it scored them."""
        out = []
        scored, note = await self.model.score(text)
        for t in scored:
            if t.logprob is None or t.top is None:
                continue
            prob = math.exp(t.logprob)
            top_prob = math.exp(t.top.logprob)
            top = t.top.text == t.text or prob >= top_prob
            out.append(Scored(t.text, prob, -t.logprob, 1 if top else None, t.text if top else t.top.text,
                              max(prob, top_prob)))
        return out, note


Source = LocalSource | RemoteSource


class Sources:
    """The sources this server has, in the order a chooser lists them."""

    def __init__(self, main: Engine, second: Engine | None = None, remote: RemoteModel | None = None,
                 max_new_tokens: int = 512):
        self.main = LocalSource(MAIN, main)
        self.all: dict[str, Source] = {MAIN: self.main}
        if second is not None:
            self.all[SECOND] = LocalSource(SECOND, second)
        if remote is not None:
            self.all[REMOTE] = RemoteSource(remote, max_new_tokens)

    def get(self, key: str | None) -> Source:
        """The source a URL names; the loaded model for anything else."""
        return self.all.get(key or MAIN, self.main)

    def other(self, key: str | None, than: Source) -> Source | None:
        """The source to show beside `than`: the one named, if it is another."""
        found = self.all.get(key or "")
        return found if found is not None and found is not than else None

    def choices(self) -> list[dict]:
        return [{"key": k, "label": f"{src.name} ({src.size})"} for k, src in self.all.items()]

    def __len__(self) -> int:
        return len(self.all)


@asynccontextmanager
async def opened(settings: Settings, main: Engine, second: Engine | None = None) -> AsyncIterator[Sources]:
    """The sources the settings name, for the app's lifetime: a second model (loaded here unless given) runs its
    own model thread; the remote model's connections close at the end."""
    if second is None and settings.second_model:
        second = load_second(settings)
    remote = RemoteModel(settings.remote_url, settings.remote_model, settings.remote_api_key,
                         settings.remote_timeout_s, settings.remote_logprobs) if settings.remote_url else None
    if second is not None:
        second.start()
    try:
        yield Sources(main, second, remote, settings.max_new_tokens)
    finally:
        if second is not None:
            second.stop()
        if remote is not None:
            await remote.close()


def load_second(settings: Settings) -> Engine:
    return Engine.load(settings.model_copy(update={"model": settings.second_model}))


def get_sources(request: Request) -> Sources:
    return request.app.state.sources


SourcesDep = Annotated[Sources, Depends(get_sources)]
