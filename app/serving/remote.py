"""A model on another server that speaks the OpenAI completions protocol with logprobs (vLLM,
llama.cpp's server, Hugging Face TGI, or another Deep Dive): how Deep Dive shows a model too big for
this computer.

Three questions are asked of it, through `POST {url}/v1/completions`:
- the next token's candidates: one token with `logprobs`, whose top_logprobs are the candidates;
- a generation: `stream: true`, read as Server-Sent Events (`data: {chunk}` lines, then `data: [DONE]`);
- each token's probability in a text: `echo: true` with `logprobs`, one generated token left out. llama.cpp
  refuses echo, so there its native `/tokenize` and `/completion` answer instead (score_natively).

Servers answer logprobs in two shapes, both read here (told): the legacy lists (OpenAI, vLLM, Deep Dive) and
llama.cpp's `content` list, whose token ids and bytes show a token that is half a UTF-8 character honestly.
Which server it is comes from its /v1/models (kind), because each names the sampling settings its own way and
every one of them is sent, so that no server default changes the distribution a page shows.

Whatever goes wrong (a refused connection, a timeout, an HTTP error, an answer that is not the
protocol) becomes a RemoteError: a sentence saying what happened and what to do, with 502 (or 504
for a timeout) for the API. It is a Problem (app/problems.py), so pages show it as a message.
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
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from app.problems import Problem

MESSAGE_CHARS = 200  # of the remote server's own error message, quoted in ours


class RemoteError(Problem):
    """The remote server gave no usable answer; the message says what happened and what to do."""

    status = 502


def finite_logprob(x: float) -> float:
    """A log-probability as the protocol sends it: a number up to 0, or -inf for a probability of 0."""
    if math.isnan(x) or x == math.inf:
        raise ValueError("a log-probability must be a number no greater than 0")
    return min(x, 0.0)  # a rounding error's +0.000001 is still certainty


LogProb = Annotated[float, AfterValidator(finite_logprob)]
Byte = Annotated[int, Field(ge=0, le=255)]


class Logprobs(BaseModel):
    """The legacy completions shape (OpenAI, vLLM, Deep Dive): parallel lists, alternatives as dicts."""

    tokens: list[str]
    token_logprobs: list[LogProb | None]
    top_logprobs: list[dict[str, LogProb] | None] | None = None
    text_offset: list[int] | None = None


class ContentTop(BaseModel):
    """One alternative in llama.cpp's shape (and TGI's chat shape, which has no id or bytes)."""

    token: str
    logprob: LogProb
    id: int | None = None
    bytes: list[Byte] | None = None


class ContentToken(ContentTop):
    top_logprobs: list[ContentTop] = []


class ContentLogprobs(BaseModel):
    """llama.cpp's completions shape: one entry per generated token, with its id and bytes."""

    content: list[ContentToken]


class Choice(BaseModel):
    text: str
    logprobs: Any = None  # one of the shapes above, told apart by told_tokens
    finish_reason: str | None = None


class Usage(BaseModel):
    prompt_tokens: int


class Completion(BaseModel):
    choices: list[Choice]
    usage: Usage | None = None


class NativeCompletion(BaseModel):
    """llama.cpp's native /completion: its tokens in the same shape as its completions' content list."""

    completion_probabilities: list[ContentToken] = []


class TokenPiece(BaseModel):
    id: int
    piece: str | list[Byte]


class Tokenized(BaseModel):
    """llama.cpp's /tokenize with with_pieces: a piece is text, or its bytes where it is part of a character."""

    tokens: list[TokenPiece]


@dataclass(frozen=True)
class Alternative:
    """A token the server listed: the text a page shows, its log-probability, its id where the server gave one,
    and whether it is whole characters (False: only part of a UTF-8 character, shown as its bytes, \\xe2\\x80)."""

    text: str
    logprob: float
    id: int | None = None
    whole: bool = True


@dataclass(frozen=True)
class Told:
    """One token of a server's logprobs, whatever shape they came in, with the alternatives listed there."""

    token: Alternative
    logprob: float | None  # None for an echoed prompt's first token, which nothing predicts
    alternatives: list[Alternative]
    offset: int | None = None  # where it starts in the text, where the server said


@dataclass(frozen=True)
class EchoedToken:
    """One token of a scored text: its text, where it starts, its log-probability (None for the first,
    which nothing predicts) and the model's most likely token there."""

    text: str
    offset: int
    logprob: float | None
    top: Alternative | None
    whole: bool = True


@dataclass(frozen=True)
class StreamedToken:
    """One streamed token: its text, log-probability and the alternatives the server listed."""

    text: str
    logprob: float | None
    alternatives: list[Alternative]


@dataclass(frozen=True)
class Finished:
    reason: str  # "length" or "stop", as the server said; "" when it did not say
    prompt_tokens: int | None


def shown(token: str, raw: list[int] | None = None) -> tuple[str, bool]:
    """A token as a page shows it, and whether it is whole characters. The bytes, where the server sends them,
    are the truth: a token that is half a UTF-8 character shows as those bytes (\\xe2\\x80), never as a
    replacement character. OpenAI writes such a token as "bytes:\\xe2\\x80"; without bytes, a U+FFFD the
    server put in marks one."""
    if raw is not None:
        data = bytes(raw)
        try:
            return data.decode("utf-8"), True
        except UnicodeDecodeError:
            return data.decode("utf-8", "backslashreplace"), False
    if token.startswith("bytes:"):
        return token[6:], False
    return token, "\ufffd" not in token


def alternative(text: str, logprob: float, id: int | None = None, raw: list[int] | None = None) -> Alternative:
    text, whole = shown(text, raw)
    return Alternative(text, logprob, id, whole)


def alternatives(top: dict[str, float] | None) -> list[Alternative]:
    return sorted((alternative(t, lp) for t, lp in (top or {}).items()), key=lambda a: -a.logprob)


LLAMA_CPP, VLLM, DEEPDIVE, OTHER = "llama.cpp", "vLLM", "Deep Dive", ""
OWNERS = {"llamacpp": LLAMA_CPP, "vllm": VLLM, "deepdive": DEEPDIVE}  # /v1/models' owned_by, as each server says it
MAX_SCORED = 256  # tokens llama.cpp scores for the loss view: it is asked once per token
BIAS = 1000.0     # a logit bias that makes greedy decoding choose a token whatever the model thinks of it


class RemoteModel:
    """The client for one model on one server (settings: DEEPDIVE_REMOTE_URL, _MODEL, _API_KEY, _TIMEOUT_S)."""

    def __init__(self, url: str, model: str, api_key: str = "", timeout_s: float = 30.0, logprobs: int = 5):
        self.base = url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.timeout_s = timeout_s
        self.logprobs = logprobs
        self.host = urlsplit(self.base).netloc or self.base
        self._kind: str | None = None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.base, headers=headers, timeout=httpx.Timeout(timeout_s))

    @property
    def named(self) -> dict[str, str]:
        """The model field of a request: vLLM and TGI want the name they serve; llama.cpp takes none."""
        return {"model": self.model} if self.model else {}

    async def close(self) -> None:
        await self.client.aclose()

    async def kind(self) -> str:
        """Which server this is (LLAMA_CPP, VLLM, DEEPDIVE or OTHER), from the owned_by of /v1/models: each
        takes its own names for the sampling settings, and llama.cpp has native endpoints that give more.
        Asked once; a server that cannot be reached raises, and is asked again next time."""
        if self._kind is None:
            async def ask() -> httpx.Response:
                return await self.client.get("/v1/models")

            response = await self.call(ask())
            try:
                owners = [m.get("owned_by") for m in response.json()["data"]] if response.status_code < 400 else []
            except (ValueError, KeyError, TypeError, AttributeError):  # not that endpoint: some other server
                owners = []
            self._kind = next((OWNERS[o] for o in owners if o in OWNERS), OTHER)
        return self._kind

    @staticmethod
    def sampling(kind: str, temperature: float, top_k: int, top_p: float, seed: int | None) -> dict[str, Any]:
        """Every setting that shapes a draw, sent explicitly, so that a server's own defaults (llama.cpp's: top_k
        40, top_p 0.95, min_p 0.05) never change what Deep Dive shows. Each server has its own names, and
        OpenAI refuses what it does not know, so only the known servers get their extras."""
        body: dict[str, Any] = {"temperature": temperature, "top_p": top_p, **({"seed": seed} if seed is not None else {})}
        if kind == LLAMA_CPP:
            # only the samplers named run, in Deep Dive's order (model/decode/sampling.py); the probabilities it lists
            # are the model's own, before any of them (post_sampling_probs false)
            body |= {"top_k": top_k, "samplers": ["temperature", "top_k", "top_p"], "min_p": 0.0, "typical_p": 1.0,
                     "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "dry_multiplier": 0.0,
                     "xtc_probability": 0.0, "mirostat": 0, "dynatemp_range": 0.0, "post_sampling_probs": False}
        elif kind == VLLM:
            body |= {"top_k": top_k or -1, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
                     "frequency_penalty": 0.0}
        elif top_k:  # Deep Dive takes top_k as vLLM does; OpenAI refuses it, so it goes only where it matters
            body |= {"top_k": top_k}
        return body

    # ---- the three questions ----

    async def next_token(self, text: str, n: int) -> list[Alternative]:
        """The n (at most `logprobs`) most likely next tokens after text, most likely first: the model's own
        probabilities, before any sampling setting."""
        kind = await self.kind()
        c = await self.complete({"prompt": text, "max_tokens": 1, **self.sampling(kind, 0.0, 0, 1.0, None),
                                 "logprobs": min(n, self.logprobs)})
        told = self.told(c.logprobs)
        top = told[0].alternatives if told else []
        if not top:
            raise self.malformed("no top_logprobs for the next token")
        return top[:n]

    async def score(self, text: str) -> tuple[list[EchoedToken], str]:
        """Each token of text with its log-probability, and a sentence saying how the server gave them: from the
        prompt's echo, or, on llama.cpp, which does not echo, from its native endpoints."""
        if await self.kind() == LLAMA_CPP:
            return await self.score_natively(text)
        c = await self.complete({"prompt": text, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True})
        lp = c.logprobs
        if not isinstance(lp, dict) or lp.get("text_offset") is None or lp.get("top_logprobs") is None:
            raise RemoteError(f"The model server at {self.host} cannot score a text: it sent no log-probabilities "
                              "for the prompt (Deep Dive asks with echo and logprobs, which vLLM and Deep Dive answer)")
        told = self.told(lp)
        out = []
        for t in told:
            if t.offset is None or t.offset >= len(text):  # the generated token after the echo
                break
            out.append(EchoedToken(t.token.text, t.offset, t.logprob, t.alternatives[0] if t.alternatives else None,
                              t.token.whole))
        return out, "Its first token has nothing before it to predict it, so it is left out."

    async def score_natively(self, text: str) -> tuple[list[EchoedToken], str]:
        """llama.cpp's answer to "how likely is each token of this text": its completions endpoint refuses echo,
        so its /tokenize gives the tokens, and its /completion is asked once per token, from the tokens before it,
        with a logit bias that makes it choose that token. The log-probability it reports for the chosen token is
        the model's own, before the bias (post_sampling_probs false), and its top_logprobs say the most likely
        token there. Requests go one after another, so each reuses the one before's cache."""
        with_bos = await self.tokens(text, True)
        plain = await self.tokens(text, False)
        extra = len(with_bos) - len(plain)  # the start-of-text token, where the model puts one in front
        start = with_bos[:extra] if extra > 0 and [i for i, _ in with_bos[extra:]] == [i for i, _ in plain] else []
        tokens = plain[:MAX_SCORED]
        out, offset, unscored = [], 0, 0
        for i, (id, piece) in enumerate(tokens):
            before = [t for t, _ in start] + [t for t, _ in tokens[:i]]
            logprob, top = None, None
            if before:
                body = {"prompt": before, "n_predict": 1, "n_probs": 1, "temperature": 0.0, "samplers": ["temperature"],
                        "logit_bias": [[id, BIAS]], "post_sampling_probs": False, "cache_prompt": True}
                data = await self.native("/completion", body)
                chosen = self.read(NativeCompletion, data).completion_probabilities
                if not chosen and not piece.whole:
                    # llama.cpp holds back the probabilities of a generation that ends inside a character
                    unscored += 1
                elif not chosen or chosen[0].id != id:
                    raise self.malformed("a /completion that did not choose the token it was biased to")
                else:
                    logprob = chosen[0].logprob
                    tops = [alternative(a.token, a.logprob, a.id, a.bytes) for a in chosen[0].top_logprobs]
                    top = tops[0] if tops else None
            out.append(EchoedToken(piece.text, offset, logprob, top, piece.whole))
            offset += len(piece.text)
        note = ("llama.cpp gives no log-probabilities for a prompt through its OpenAI endpoint (it refuses echo), so "
                "Deep Dive asked its own /completion endpoint once per token, from the tokens before it.")
        if not start:
            note += " Its first token has nothing before it to predict it, so it is left out."
        if unscored:
            note += (f" {unscored:,} token{'s' if unscored > 1 else ''} that end{'' if unscored > 1 else 's'} inside a "
                     "character could not be scored: llama.cpp sends no probabilities for half a character.")
        if len(plain) > MAX_SCORED:
            note += f" Only the first {MAX_SCORED:,} of its {len(plain):,} tokens are scored, one request each."
        return out, note

    async def tokens(self, text: str, add_special: bool) -> list[tuple[int, Alternative]]:
        """llama.cpp's /tokenize: each token's id and its piece (bytes where it is part of a character)."""
        data = await self.native("/tokenize", {"content": text, "add_special": add_special, "with_pieces": True})
        out = []
        for t in self.read(Tokenized, data).tokens:
            raw = t.piece if isinstance(t.piece, list) else None
            out.append((t.id, alternative(t.piece if isinstance(t.piece, str) else "", 0.0, t.id, raw)))
        return out

    async def native(self, path: str, body: dict[str, Any]) -> Any:
        async def exchange() -> httpx.Response:
            return await self.client.post(path, json=body)

        response = await self.call(exchange())
        if response.status_code >= 400:
            raise self.http_error(response)
        return self.parse(response.text)

    async def stream(self, prompt: str, max_tokens: int, temperature: float, top_k: int, top_p: float,
                     seed: int | None, stop: list[str], n_top: int) -> AsyncIterator[StreamedToken | Finished]:
        """A generation as it is sampled by the server. The request is sent, and its status checked, before
        the first item is yielded; each later read waits at most timeout_s."""
        kind = await self.kind()
        body = {**self.named, "prompt": prompt, "max_tokens": max_tokens,
                **self.sampling(kind, temperature, top_k, top_p, seed),
                "logprobs": min(n_top, self.logprobs), "stream": True,
                "stream_options": {"include_usage": True}, **({"stop": stop} if stop else {})}
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

    async def _pieces(self, response: httpx.Response) -> AsyncIterator[StreamedToken | Finished]:
        reason, prompt_tokens = "", None
        try:
            lines = response.aiter_lines()
            while True:
                line = await self.call(anext(lines, None))
                if line is None and not reason:  # every server ends with [DONE]: this one went away before it
                    raise RemoteError(f"The model server at {self.host} closed the connection in the middle of "
                                      "the generation: it may have stopped or restarted; try again")
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
                    told = self.told(choice.logprobs)
                    for i, t in enumerate(told):
                        # the chunk's text, whole characters, goes with its first token
                        yield StreamedToken(choice.text if i == 0 else "", t.logprob, t.alternatives)
                    if not told and choice.text:
                        yield StreamedToken(choice.text, None, [])
                    reason = choice.finish_reason or reason
        finally:
            await response.aclose()
        yield Finished(reason, prompt_tokens)

    def told(self, logprobs: Any) -> list[Told]:
        """The tokens of a choice's logprobs, in any shape a server sends: the legacy lists (OpenAI, vLLM, Deep
        Dive), llama.cpp's content list with ids and bytes, or none. TGI's completions send a bare list of
        numbers, with no tokens and no alternatives: nothing Deep Dive can show."""
        if logprobs is None:
            return []
        if isinstance(logprobs, dict) and "content" in logprobs:
            content = self.read(ContentLogprobs, logprobs, "choices.0.logprobs").content
            return [Told(alternative(t.token, t.logprob, t.id, t.bytes), t.logprob,
                         sorted((alternative(a.token, a.logprob, a.id, a.bytes) for a in t.top_logprobs),
                                key=lambda a: -a.logprob)) for t in content]
        if isinstance(logprobs, dict):
            lp = self.read(Logprobs, logprobs, "choices.0.logprobs")
            tops = lp.top_logprobs or []
            offsets = lp.text_offset or []
            if any(len(x) not in (0, len(lp.tokens)) for x in (lp.token_logprobs, tops, offsets)):
                raise self.malformed("logprobs whose lists differ in length")
            return [Told(alternative(token, 0.0 if logprob is None else logprob), logprob,
                         alternatives(tops[i] if i < len(tops) else None), offsets[i] if i < len(offsets) else None)
                    for i, (token, logprob) in enumerate(zip(lp.tokens, lp.token_logprobs))]
        raise self.malformed("logprobs without tokens or alternatives, as TGI's completions send")

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

    def read(self, model: type[BaseModel], data: Any, at: str = "") -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as e:
            where = ".".join([at] * bool(at) + [str(x) for x in e.errors()[0]["loc"]]) or "the answer"
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
