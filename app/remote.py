"""A model on another server that speaks the OpenAI completions protocol with logprobs (vLLM,
llama.cpp's server, Hugging Face TGI, or another Deep Dive): how Deep Dive shows a model too big for
this computer.

Three questions are asked of it, all through `POST {url}/v1/completions`:
- the next token's candidates: one token with `logprobs`, whose top_logprobs are the candidates;
- a generation: `stream: true`, read as Server-Sent Events (`data: {chunk}` lines, then `data: [DONE]`);
- each token's probability in a text: `echo: true` with `logprobs`, one generated token left out.

Whatever goes wrong (a refused connection, a timeout, an HTTP error, an answer that is not the
protocol) becomes a RemoteError: a sentence saying what happened and what to do, with 502 (or 504
for a timeout) for the API. It travels as an InputError does, so pages show it as a message.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
import httpx
from pydantic import AfterValidator, BaseModel, ValidationError

from app.engine import InputError

MESSAGE_CHARS = 200  # of the remote server's own error message, quoted in ours


class RemoteError(InputError):
    """The remote server gave no usable answer; the message says what happened and what to do."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message, status)


def finite_logprob(x: float) -> float:
    """A log-probability as the protocol sends it: a number up to 0, or -inf for a probability of 0."""
    if math.isnan(x) or x == math.inf:
        raise ValueError("a log-probability must be a number no greater than 0")
    return min(x, 0.0)  # a rounding error's +0.000001 is still certainty


LogProb = Annotated[float, AfterValidator(finite_logprob)]


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[LogProb | None]
    top_logprobs: list[dict[str, LogProb] | None] | None = None
    text_offset: list[int] | None = None


class Choice(BaseModel):
    text: str
    logprobs: Logprobs | None = None
    finish_reason: str | None = None


class Usage(BaseModel):
    prompt_tokens: int


class Completion(BaseModel):
    choices: list[Choice]
    usage: Usage | None = None


@dataclass(frozen=True)
class Alternative:
    text: str
    logprob: float


@dataclass(frozen=True)
class Scored:
    """One token of a scored text: its text, where it starts, its log-probability (None for the first,
    which nothing predicts) and the model's most likely token there."""

    text: str
    offset: int
    logprob: float | None
    top: Alternative | None


@dataclass(frozen=True)
class Piece:
    """One streamed token: its text, log-probability and the alternatives the server listed."""

    text: str
    logprob: float | None
    alternatives: list[Alternative]


@dataclass(frozen=True)
class Finished:
    reason: str  # "length" or "stop", as the server said; "" when it did not say
    prompt_tokens: int | None


def alternatives(top: dict[str, float] | None) -> list[Alternative]:
    return sorted((Alternative(t, lp) for t, lp in (top or {}).items()), key=lambda a: -a.logprob)


class RemoteModel:
    """The client for one model on one server (settings: DEEPDIVE_REMOTE_URL, _MODEL, _API_KEY, _TIMEOUT_S)."""

    def __init__(self, url: str, model: str, api_key: str = "", timeout_s: float = 30.0, logprobs: int = 5):
        self.base = url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.timeout_s = timeout_s
        self.logprobs = logprobs
        self.host = urlsplit(self.base).netloc or self.base
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.base, headers=headers, timeout=httpx.Timeout(timeout_s))

    @property
    def named(self) -> dict[str, str]:
        """The model field of a request: vLLM and TGI want the name they serve; llama.cpp takes none."""
        return {"model": self.model} if self.model else {}

    async def close(self) -> None:
        await self.client.aclose()

    # ---- the three questions ----

    async def next_token(self, text: str, n: int) -> list[Alternative]:
        """The n (at most `logprobs`) most likely next tokens after text, most likely first."""
        c = await self.complete({"prompt": text, "max_tokens": 1, "temperature": 0, "logprobs": min(n, self.logprobs)})
        lp = c.logprobs
        top = lp.top_logprobs[0] if lp and lp.top_logprobs else None
        if not top:
            raise self.malformed("no top_logprobs for the next token")
        return alternatives(top)[:n]

    async def score(self, text: str) -> list[Scored]:
        """Each token of text with its log-probability, read from the prompt's echo."""
        c = await self.complete({"prompt": text, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True})
        lp = c.logprobs
        if lp is None or lp.text_offset is None or lp.top_logprobs is None:
            raise self.malformed("no logprobs with text_offset and top_logprobs for the echoed prompt")
        if not len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == len(lp.top_logprobs):
            raise self.malformed("logprobs whose lists differ in length")
        out = []
        for token, logprob, offset, top in zip(lp.tokens, lp.token_logprobs, lp.text_offset, lp.top_logprobs):
            if offset >= len(text):  # the generated token after the echo
                break
            best = alternatives(top)
            out.append(Scored(token, offset, logprob, best[0] if best else None))
        return out

    async def stream(self, prompt: str, max_tokens: int, temperature: float, top_k: int, top_p: float,
                     seed: int | None, stop: list[str], n_top: int) -> AsyncIterator[Piece | Finished]:
        """A generation as it is sampled by the server. The request is sent, and its status checked, before
        the first item is yielded; each later read waits at most timeout_s."""
        body = {**self.named, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p, "logprobs": min(n_top, self.logprobs), "stream": True,
                "stream_options": {"include_usage": True}, **({"top_k": top_k} if top_k else {}),
                **({"seed": seed} if seed is not None else {}), **({"stop": stop} if stop else {})}
        request = self.client.build_request("POST", "/v1/completions", json=body)
        response = await self.call(self.client.send(request, stream=True))
        try:
            if response.status_code >= 400:
                await self.call(response.aread())
                raise self.http_error(response)
        except BaseException:
            await response.aclose()
            raise
        return self._pieces(response)

    async def _pieces(self, response: httpx.Response) -> AsyncIterator[Piece | Finished]:
        reason, prompt_tokens = "", None
        try:
            lines = response.aiter_lines()
            while True:
                line = await self.call(anext(lines, None))
                if line is None or line.strip() == "data: [DONE]":
                    break
                if not line.startswith("data:"):
                    continue  # blank lines between events, comments, event names
                data = self.parse(line[5:].strip())
                if isinstance(data, dict) and "error" in data:
                    raise RemoteError(f"The model server at {self.host} stopped the generation: "
                                      f"{quoted(data['error'])}")
                chunk = self.read(Completion, data)
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                for choice in chunk.choices[:1]:
                    lp = choice.logprobs
                    if lp and lp.tokens:
                        tops = lp.top_logprobs or []
                        for i in range(len(lp.tokens)):
                            # the chunk's text, whole characters, goes with its first token
                            yield Piece(choice.text if i == 0 else "",
                                        lp.token_logprobs[i] if i < len(lp.token_logprobs) else None,
                                        alternatives(tops[i] if i < len(tops) else None))
                    elif choice.text:
                        yield Piece(choice.text, None, [])
                    reason = choice.finish_reason or reason
        finally:
            await response.aclose()
        yield Finished(reason, prompt_tokens)

    # ---- one request, and what can go wrong with it ----

    async def complete(self, body: dict[str, Any]) -> Choice:
        """A non-streamed completion's first choice; the whole exchange waits at most timeout_s."""
        async def exchange() -> httpx.Response:
            return await self.client.post("/v1/completions", json={**self.named, **body})

        response = await self.call(exchange())
        if response.status_code >= 400:
            raise self.http_error(response)
        c = self.read(Completion, self.parse(response.text))
        if not c.choices:
            raise self.malformed("no choices")
        return c.choices[0]

    async def call(self, work: Any) -> Any:
        """Await one step of an exchange, its failures as sentences."""
        try:
            with anyio.fail_after(self.timeout_s):
                return await work
        except (TimeoutError, httpx.TimeoutException):
            raise RemoteError(f"The model server at {self.host} did not answer within {self.timeout_s:g} s: it may be "
                              "busy or overloaded; try again, or raise DEEPDIVE_REMOTE_TIMEOUT_S", 504) from None
        except httpx.ConnectError:
            raise RemoteError(f"The model server at {self.host} refused the connection: check that it is running "
                              "and that DEEPDIVE_REMOTE_URL names it") from None
        except httpx.HTTPError as e:
            raise RemoteError(f"The connection to the model server at {self.host} broke off "
                              f"({type(e).__name__}): try again") from None

    def http_error(self, response: httpx.Response) -> RemoteError:
        try:
            body = json.loads(response.text)
        except ValueError:
            body = response.text
        said = body.get("error", body.get("message", body.get("detail", body))) if isinstance(body, dict) else body
        detail = f": {quoted(said)}" if said else ""
        return RemoteError(f"The model server at {self.host} answered {response.status_code} "
                           f"{response.reason_phrase}{detail}")

    def parse(self, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            raise self.malformed("an answer that is not JSON") from None

    def read(self, model: type[BaseModel], data: Any) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as e:
            where = ".".join(map(str, e.errors()[0]["loc"])) or "the answer"
            raise self.malformed(f"{where}: {e.errors()[0]['msg'].lower()}") from None

    def malformed(self, what: str) -> RemoteError:
        return RemoteError(f"The model server at {self.host} sent an answer Deep Dive cannot read ({what}): it must "
                           "speak the OpenAI completions protocol with logprobs, as vLLM, llama.cpp's server and TGI do")


def quoted(said: Any) -> str:
    """What the remote server said about an error, short enough to show."""
    if isinstance(said, dict):
        said = said.get("message", said)
    text = " ".join(str(said).split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"
