"""The models a page can use: the loaded model, a second local model (DEEPDIVE_SECOND_MODEL) and a model on
a serving engine (DEEPDIVE_REMOTE_URL, app/serving/remote.py).

Each is a Source (the protocol below) that pages ask the same things, with text rather than token ids, because
each model has its own tokenizer: the next token's most likely candidates, a generation as a stream of typed
events, each token's probability in a text, and the stepper's view of it (app/views/stepping.py). What a source can
do beyond that is in its Abilities, never in a test of its kind: only a model whose weights are here can be
looked inside. The lifespan (app/main.py) puts a Sources in app.state; routes get it through
app/deps.py and pick the one the URL names (`model=`), the loaded model when it names none.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Request
from pydantic import BaseModel, Field

from app.schemas import answers as an, requests as rq
from app.config import Settings
from app.serving.engine import Engine
from app.serving.remote import Finished, RemoteError, RemoteModel
from app.views.stepping import NONE, Changes, LocalSteps, RemoteSteps, Steps
from app.serving.streaming import Generation, sse
from app.templating import si
from model.decode.sampling import SamplingParams

MAIN, SECOND, REMOTE, LIVE = "local", "second", "remote", "live"  # the values of `model=` in a page's URL


@dataclass(frozen=True)
class TokenChance:
    text: str
    prob: float
    whole: bool = True  # False: only part of a UTF-8 character, its text the bytes (\xe2\x80)


@dataclass(frozen=True)
class ScoredToken:
    """One token of a scored text, predicted from the tokens before it."""

    text: str
    prob: float
    loss: float           # -ln prob, in nats
    rank: int | None      # 1 = the model's most likely token; None where the source does not say
    top_text: str         # the model's own most likely token there
    top_prob: float
    id: int | None = None  # where the source knows tokens by id


@dataclass(frozen=True)
class Abilities:
    weights: bool  # the network is here: Internals, switching parts off and patching work on it
    ranks: bool    # a scored token's rank and the model's own top token are known everywhere


class Alternative(BaseModel):
    text: str
    prob: float


class SourceToken(BaseModel):
    """One generated token from a model server: what it does not say (the id, the chance after the settings, the
    entropy) is null; a model loaded here yields schemas.TokenEvent, which says all of it."""

    step: int
    id: int | None
    text: str
    piece: str
    prob: float | None
    raw_prob: float | None
    entropy: float | None
    before: list[Alternative]
    after: list[Alternative]


class PromptParts(BaseModel):
    """A templated chat prompt's parts, sent before its tokens, so the page shows the template's special tokens as
    the model read them."""

    parts: list[dict]


class SourceDone(an.DoneEvent):
    prompt_tokens: int | None  # a model server may not say


Event = PromptParts | an.TokenEvent | SourceToken | an.DoneEvent


class Stream(Protocol):
    """A generation: its events, then one DoneEvent; cancel() (idempotent) stops the work when the reader goes."""

    def __aiter__(self) -> AsyncIterator[Event]: ...
    def cancel(self) -> None: ...


@dataclass(frozen=True)
class ScoredText:
    tokens: list[ScoredToken]
    note: str | None = None         # how the source scored them, where it says
    vocab_size: int | None = None  # where known: a uniform guess costs ln of it


class Source(Protocol):
    key: str
    abilities: Abilities
    engine: Engine | None  # the engine of a model loaded here

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> str: ...
    async def next_token(self, text: str, n: int) -> list[TokenChance]: ...
    async def generate(self, req: GenerateRequest) -> Stream: ...
    async def score(self, text: str) -> ScoredText: ...
    def steps(self, changes: Changes = NONE) -> Steps: ...


class GenerateRequest(rq.GenerateRequest):
    """/api/generate's request, and which model writes (a key of Sources)."""

    model: str = Field(MAIN, max_length=40)
    chat: bool = Field(False, description="the prompt is a Human/Assistant transcript: a model whose file has a chat "
                                          "template (an instruct model) reads it written out in that template; "
                                          "any other continues it as text")


class LocalSource:
    """A model loaded here: every page works on it, Internals included."""

    abilities = Abilities(weights=True, ranks=True)

    def __init__(self, key: str, engine: Engine):
        self.key = key
        self.engine = engine

    @property
    def name(self) -> str:
        return self.engine.info().name

    @property
    def size(self) -> str:
        return f"{si(self.engine.info().parameters['total'])} parameters"

    async def next_token(self, text: str, n: int) -> list[TokenChance]:
        r = await self.engine.next_token(rq.NextTokenRequest(text=text, n=n))
        return [TokenChance(c.text, c.prob) for c in r.before]

    async def generate(self, req: GenerateRequest) -> Stream:
        """The engine's generation; a templated chat prompt (req.chat on an instruct model) first says its parts."""
        params = SamplingParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
        chat = await self.engine.chat_prompt(req.prompt) if req.chat else None
        gen = await self.engine.generate(req.prompt if chat is None else chat[0], req.max_new_tokens, params,
                                         seed=req.seed, stop=req.stop, n_top=req.n_top)
        return LocalStream(gen, None if chat is None else chat[1])

    async def score(self, text: str) -> ScoredText:
        """Each token from <|endoftext|> on (so the first counts), as much of the text as the context holds."""
        r, n_tokens, room = await self.engine.score_prefix(text)
        note = (f"The model reads at most {room + 1:,} tokens at once, so only the first {room:,} of your "
                f"{n_tokens:,} tokens were scored." if n_tokens > room else None)
        return ScoredText([ScoredToken(p.text, p.prob, p.loss, p.rank, p.top_text, p.top_prob, p.id)
                           for p in r.predictions], note, self.engine.info().vocab_size)

    def steps(self, changes: Changes = NONE) -> Steps:
        return LocalSteps(self.engine, changes)


class LocalStream:
    def __init__(self, gen: Generation, parts: list[dict] | None):
        self.gen = gen
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self.parts is not None:
            yield PromptParts(parts=self.parts)
        async for ev in self.gen:
            yield ev

    def cancel(self) -> None:
        self.gen.cancel()


class RemoteSource:
    """A model on a serving engine: distributions and text, but no weights to look inside."""

    key = REMOTE
    abilities = Abilities(weights=False, ranks=False)
    engine = None

    def __init__(self, model: RemoteModel, max_new_tokens: int):
        self.model = model
        self.max_new_tokens = max_new_tokens

    @property
    def name(self) -> str:
        return self.model.model or self.model.host

    @property
    def size(self) -> str:
        return f"served by {self.model.host}"

    @property
    def host(self) -> str:
        return self.model.host

    @property
    def logprobs(self) -> int:
        return self.model.logprobs

    async def next_token(self, text: str, n: int) -> list[TokenChance]:
        if not text:
            raise RemoteError("Type a prompt: the model server continues a text, and this one is empty", 422)
        return [TokenChance(a.text, math.exp(a.logprob), a.whole) for a in await self.model.next_token(text, n)]

    async def generate(self, req: GenerateRequest) -> Stream:
        if req.max_new_tokens > self.max_new_tokens:
            raise RemoteError(f"The field max_new_tokens is {req.max_new_tokens:,}; this server generates at most "
                              f"{self.max_new_tokens:,} tokens per request: ask for fewer", 422)
        pieces = await self.model.stream(req.prompt, req.max_new_tokens, req.temperature, req.top_k, req.top_p,
                                         req.seed, req.stop, req.n_top)
        return RemoteStream(pieces, bool(req.stop))

    async def score(self, text: str) -> ScoredText:
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
            out.append(ScoredToken(t.text, prob, -t.logprob, 1 if top else None, t.text if top else t.top.text,
                                   max(prob, top_prob)))
        return ScoredText(out, f"Scored by {self.name} ({self.size}), with its own tokenizer. {note}")

    def steps(self, changes: Changes = NONE) -> Steps:
        return RemoteSteps(self)  # nothing in a model server can be changed from a link


class RemoteStream:
    """The server's pieces as a source's events."""

    def __init__(self, pieces: AsyncIterator, stops: bool):
        self.pieces = pieces
        self.stops = stops

    def cancel(self) -> None:
        """Nothing runs here between reads: the server's stream closes with its reader."""

    async def __aiter__(self) -> AsyncIterator[Event]:
        started, first, count = time.perf_counter(), None, 0
        reason, prompt_tokens, message = "error", None, None
        try:
            async for p in self.pieces:
                if isinstance(p, Finished):
                    # OpenAI's "stop" is both a stop text and the end of text; without stop texts it is the latter
                    reason = {"length": "length", "stop": "stop" if self.stops else "eos"}.get(p.reason, "eos")
                    prompt_tokens = p.prompt_tokens
                    continue
                first = first or time.perf_counter()
                yield SourceToken(step=count, id=None, text=p.text, piece=p.text, prob=None,
                                  raw_prob=None if p.logprob is None else math.exp(p.logprob), entropy=None,
                                  before=[Alternative(text=a.text, prob=math.exp(a.logprob)) for a in p.alternatives],
                                  after=[])
                count += 1
        except RemoteError as e:
            message = str(e)
        total = time.perf_counter() - started
        yield SourceDone(finish_reason=reason, prompt_tokens=prompt_tokens, completion_tokens=count, text="",
                          message=message,
                          timings=an.Timings(first_token_ms=None if first is None else round((first - started) * 1000, 1),
                                            total_ms=round(total * 1000, 1),
                                            tokens_per_second=round(count / total, 2) if total > 0 else 0.0))


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

    def put(self, live: LocalSource | None) -> LocalSource | None:
        """The model trained live on the Training page (app/serving/live.py) joins the others, or leaves them;
        returns the one it replaces."""
        old = self.all.pop(LIVE, None)
        if live is not None:
            self.all[LIVE] = live
        return old  # type: ignore[return-value]

    def get(self, key: str | None) -> Source:
        """The source a URL names; the loaded model for anything else."""
        return self.all.get(key or MAIN, self.main)

    def other(self, key: str | None, than: Source) -> Source | None:
        """The source to show beside `than`: the one named, if it is another."""
        found = self.all.get(key or "")
        return found if found is not None and found is not than else None

    def choices(self) -> list[dict]:
        return [{"key": k, "label": f"{src.name} ({src.size})"} for k, src in self.all.items()]

    def chooser(self, source: Source) -> dict:
        """A page's model chooser, on a server with more than one model."""
        return {"model_choices": self.choices(), "model_key": source.key, "compare_key": ""} if len(self) > 1 else {}

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


async def as_sse(stream: Stream) -> AsyncIterator[str]:
    """A stream as /api/generate sends it: `event: prompt` (a chat prompt's parts), `event: token`s, `event: done`."""
    async for ev in stream:
        yield sse(ev.model_dump_json(), "prompt" if isinstance(ev, PromptParts)
                  else "done" if isinstance(ev, an.DoneEvent) else "token")


@dataclass(frozen=True)
class Inside:
    """The model the Internals page and its partials look inside: the one the URL or the form names (`model=`)."""

    source: Source
    engine: Engine       # the chosen model's; the loaded one's where the chosen one's weights are not here
    refusal: str | None  # why the chosen model cannot be looked inside


async def inside(request: Request) -> Inside:
    sources = get_sources(request)
    key = request.query_params.get("model")
    if key is None and request.method == "POST":
        key = (await request.form()).get("model")  # the page's htmx requests carry it (hx-vals)
    source = sources.get(str(key or ""))
    if source.engine is not None:
        return Inside(source, source.engine, None)
    main = sources.main
    return Inside(source, main.engine, f"Looking inside {source.name} needs its weights, which stay on the model "
                                       f"server ({source.size}): this page shows a model loaded here, {main.name}.")


InsideDep = Annotated[Inside, Depends(inside)]
