"""The one object routes talk to: it owns the loaded model, the tokenizer and the model thread.

Every request's model work runs on ONE thread (ModelThread), so forwards never
run forty at a time on a laptop's few cores and the event loop never waits on
torch. That thread alternates: one queued analysis job (next-token, score,
activations), then one decode step for every stream being generated
(continuous batching: streams join and leave between steps). Tokenizer work
needs no model and runs in the ordinary thread pool, so a tokenize request
never queues behind the model.

Errors a caller can fix are InputError (413 or 422, with a sentence saying what
was wrong and what is allowed); a full queue is Busy (503).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
import torch

from app import schemas as s
from app.config import Settings
from model import analysis, incontext
from model.batching import BatchDecoder
from model.loading import LoadedModel, load_model
from model.sampling import SamplingParams, Step, Utf8Stream
from model.tokenizer import EOT_ID, MAX_HISTORY_BYTES, Tokenizer, gpt2_tokenizer

log = logging.getLogger("deepdive.engine")
T = TypeVar("T")


class InputError(Exception):
    """A request the engine refuses; the message says what was wrong and what is allowed."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class Busy(Exception):
    """Too much work already queued; the caller should retry shortly (503)."""


class ModelThread:
    """The thread that runs the model: analysis jobs and decode steps take turns.

    Commands (start or cancel a stream) are applied before every step, so a
    cancelled stream costs at most the step already running. The BatchDecoder
    runs up to max_batch streams in one forward; the rest wait in it for a row.
    """

    def __init__(self, loaded: LoadedModel, settings: Settings):
        self.loaded = loaded
        self.settings = settings
        self._cond = threading.Condition()
        self._jobs: deque[tuple[Future, Callable[[], Any]]] = deque()
        self._commands: deque[Callable[[], None]] = deque()
        self._active: dict[int, Generation] = {}  # decoder sequence id -> stream (running or waiting for a row)
        self._streams = 0  # streams added and not yet ended, counted on the callers' side for the Busy check
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._decoder: BatchDecoder | None = None

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stopping = False
        self._decoder = self._new_decoder()
        self._thread = threading.Thread(target=self._run, name="deepdive-model", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread:
            self._thread.join(timeout=30)
        self._thread = None

    @property
    def streams(self) -> int:
        """Generations in flight: decoding, or waiting for a place in the batch."""
        return self._streams

    @property
    def queued(self) -> int:
        """Analysis requests waiting for the model."""
        return len(self._jobs)

    def _new_decoder(self) -> BatchDecoder:
        return BatchDecoder(self.loaded.model, max_batch=self.settings.max_batch)

    # ---- called from the event loop ----

    def submit(self, fn: Callable[[], T]) -> Future:
        """Queue fn to run on the model thread; its result or exception lands in the future."""
        fut: Future = Future()
        with self._cond:
            self._check_running()
            if len(self._jobs) >= self.settings.max_queue:
                raise Busy(f"{len(self._jobs)} requests are already waiting for the model, the most this "
                           "server queues; try again in a moment")
            self._jobs.append((fut, fn))
            self._cond.notify()
        return fut

    def add_stream(self, gen: Generation) -> None:
        limit = self.settings.max_batch + self.settings.max_waiting_streams
        with self._cond:
            self._check_running()
            if self._streams >= limit:
                raise Busy(f"{self._streams} texts are being generated or waiting, the most this server "
                           "takes at once; try again in a moment")
            self._streams += 1
            self._commands.append(lambda: self._admit(gen))
            self._cond.notify()

    def cancel_stream(self, gen: Generation) -> None:
        with self._cond:
            self._commands.append(lambda: self._drop(gen))
            self._cond.notify()

    def _check_running(self) -> None:
        if self._stopping or not self._thread:
            raise Busy("the model is not running (the server is starting or stopping)")

    # ---- the model thread ----

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._commands or self._jobs or self._active):
                    self._cond.wait()
                if self._stopping:
                    break
                commands = list(self._commands)
                self._commands.clear()
                job = self._jobs.popleft() if self._jobs else None
            try:
                for command in commands:
                    command()
                if job:
                    self._run_job(*job)
                if self._active:
                    self._step()
            except Exception as e:  # noqa: BLE001 - the thread must outlive any one bad step
                log.exception("model thread: a decode step failed")
                self._end_all(f"generation failed: {type(e).__name__}: {e}")
                self._decoder = self._new_decoder()
        self._end_all("the server is shutting down")
        with self._cond:
            jobs = list(self._jobs)
            self._jobs.clear()
        for fut, _ in jobs:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(Busy("the server is shutting down"))

    @staticmethod
    def _run_job(fut: Future, fn: Callable[[], Any]) -> None:
        if not fut.set_running_or_notify_cancel():
            return  # the caller went away while it waited
        try:
            fut.set_result(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who reports it
            fut.set_exception(e)

    def _admit(self, gen: Generation) -> None:
        if gen.max_new_tokens <= 0:  # the prompt fills the context: nothing to generate
            self._end(gen, "length")
            return
        try:
            gen.seq_id = self._decoder.add(gen.prompt_ids, gen.params, gen.max_new_tokens, seed=gen.seed,
                                           n_top=gen.n_top)
        except Exception as e:  # noqa: BLE001 - one bad stream must not end the others
            log.exception("model thread: starting a stream failed")
            self._end(gen, "error", f"generation failed: {type(e).__name__}: {e}")
            return
        self._active[gen.seq_id] = gen

    def _drop(self, gen: Generation) -> None:
        if self._active.get(gen.seq_id) is gen:  # else it has ended already
            del self._active[gen.seq_id]
            self._decoder.cancel(gen.seq_id)
            self._release()

    def _step(self) -> None:
        for ev in self._decoder.step():
            gen = self._active.get(ev.seq_id)
            if gen is None:
                continue
            gen.deliver(("step", ev.step))
            if ev.step.id == EOT_ID or ev.finished:
                if not ev.finished:
                    self._decoder.cancel(ev.seq_id)
                del self._active[ev.seq_id]
                self._end(gen, "eos" if ev.step.id == EOT_ID else "length")  # "context" is a length too

    def _end(self, gen: Generation, reason: str, message: str | None = None) -> None:
        gen.deliver(("end", reason, message))
        self._release()

    def _end_all(self, message: str) -> None:
        for gen in self._active.values():
            self._end(gen, "error", message)
        self._active.clear()

    def _release(self) -> None:
        with self._cond:
            self._streams -= 1


class TextStream:
    """Sampled tokens' bytes in, text safe to show out: whole characters only, cut at a stop text.

    Text that could be the start of a stop text is held back until the next
    token shows whether it is one; so the texts pushed out, joined, are always
    the decoded output up to (not including) the first stop text.
    """

    def __init__(self, stops: Sequence[str] = ()):
        self._utf8 = Utf8Stream()
        self._stops = [t for t in stops if t]
        self._held = ""
        self.stopped = False

    def push(self, data: bytes) -> str:
        return self._release(self._held + self._utf8.push(data), final=False)

    def flush(self) -> str:
        return "" if self.stopped else self._release(self._held + self._utf8.flush(), final=True)

    def _release(self, text: str, final: bool) -> str:
        found = [i for stop in self._stops if (i := text.find(stop)) >= 0]
        if found:
            self.stopped, self._held = True, ""
            return text[:min(found)]
        keep = 0 if final else max((k for stop in self._stops for k in range(1, len(stop))
                                    if text.endswith(stop[:k])), default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]


class Generation:
    """One streaming generation. The model thread feeds it; one async consumer iterates it.

    Iterating yields a schemas.TokenEvent per token, then one schemas.DoneEvent.
    The <|endoftext|> token ends the stream (reason "eos") and is not itself an
    event. Call cancel() (idempotent) when the consumer goes away; the model
    stops working on it before its next step.
    """

    def __init__(self, engine: Engine, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int,
                 seed: int | None, n_top: int, stop: Sequence[str]):
        self.engine = engine
        self.prompt_ids = prompt_ids
        self.params = params
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.n_top = n_top
        self.stop = list(stop)
        self.seq_id: int | None = None
        self._done = False
        self._loop = asyncio.get_running_loop()
        # unbounded in name only: the model thread puts at most max_new_tokens + 1 items
        self._queue: asyncio.Queue = asyncio.Queue()
        self._started = time.perf_counter()

    def deliver(self, item: tuple) -> None:
        """From the model thread: hand an item to the consumer's event loop."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening
            pass

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self.engine.model_thread.cancel_stream(self)

    async def __aiter__(self) -> AsyncIterator[s.TokenEvent | s.DoneEvent]:
        texts = TextStream(self.stop)
        first: float | None = None
        count, reason, message = 0, "length", None
        deadline = self._started + self.engine.settings.generation_timeout_s
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.perf_counter()))
                except TimeoutError:
                    reason = "timeout"
                    message = (f"generation stopped after {self.engine.settings.generation_timeout_s:g} s, "
                               "this server's limit per request; ask for fewer tokens")
                    break
                if item[0] == "end":
                    _, reason, message = item
                    break
                step: Step = item[1]
                if step.id == EOT_ID:
                    continue  # the "end" that follows says eos
                first = first or time.perf_counter()
                count += 1
                piece = texts.push(self.engine.tokenizer.token_bytes(step.id))
                yield self.engine.token_event(count - 1, step, piece)
                if texts.stopped:
                    reason = "stop"
                    break
        finally:
            self.cancel()
        total = time.perf_counter() - self._started
        yield s.DoneEvent(
            finish_reason=reason, prompt_tokens=len(self.prompt_ids), completion_tokens=count,
            text=texts.flush(), message=message,
            timings=s.Timings(first_token_ms=None if first is None else round((first - self._started) * 1000, 1),
                              total_ms=round(total * 1000, 1),
                              tokens_per_second=round(count / total, 2) if total > 0 else 0.0))


class Engine:
    """Model and tokenizer behind every route; see the module doc for how work is scheduled."""

    def __init__(self, loaded: LoadedModel, settings: Settings):
        self.loaded = loaded
        self.settings = settings
        self.config = loaded.config
        self.tokenizer: Tokenizer = gpt2_tokenizer()
        # every token's display text, looked up for each candidate of every response
        self.texts = [self.tokenizer.lookup(i).text for i in range(self.tokenizer.vocab_size)]
        self.model_thread = ModelThread(loaded, settings)
        self.started = int(time.time())  # reported as the model's "created" time by /v1/models
        self._info = self._model_info()
        self._probe_heads: list[dict] | None = None

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        return cls(load_model(settings.model), settings)

    def start(self) -> None:
        self.model_thread.start()

    def stop(self) -> None:
        self.model_thread.stop()

    # ---- the model ----

    def info(self) -> s.ModelInfo:
        return self._info

    def _model_info(self) -> s.ModelInfo:
        cfg = self.config
        return s.ModelInfo(
            name=self.loaded.name, source=str(self.loaded.source), parameters=self.loaded.model.num_parameters(),
            n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, n_ctx=cfg.n_ctx,
            vocab_size=cfg.vocab_size, dtype=str(self.loaded.dtype).removeprefix("torch."),
            card=card_summary(self.loaded.card))

    # ---- tokens: no model, ordinary thread pool ----

    async def tokenize(self, text: str) -> s.TokenizeResponse:
        self.check_text(text)
        return await anyio.to_thread.run_sync(self._tokenize, text)

    def _tokenize(self, text: str) -> s.TokenizeResponse:
        tokens = self.tokenizer.tokens(text)
        n_bytes = len(text.encode("utf-8", errors="surrogatepass"))
        return s.TokenizeResponse(
            tokens=[s.SpanToken(id=t.id, text=t.text, bytes=list(t.bytes), partial=t.partial,
                                start=t.start, end=t.end) for t in tokens],
            counts=s.Counts(characters=len(text), bytes=n_bytes, tokens=len(tokens),
                            characters_per_token=round(len(text) / len(tokens), 3) if tokens else 0.0))

    async def detokenize(self, ids: list[int]) -> s.DetokenizeResponse:
        self.check_ids(ids)
        return await anyio.to_thread.run_sync(self._detokenize, ids)

    def _detokenize(self, ids: list[int]) -> s.DetokenizeResponse:
        return s.DetokenizeResponse(text=self.tokenizer.decode(ids), tokens=[self.token_out(i) for i in ids])

    async def bpe(self, text: str) -> s.BpeResponse:
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > MAX_HISTORY_BYTES:
            raise InputError(f"text is {size:,} UTF-8 bytes; the merge history is shown for at most "
                             f"{MAX_HISTORY_BYTES:,}", 413)
        return await anyio.to_thread.run_sync(self._bpe, text)

    def _bpe(self, text: str) -> s.BpeResponse:
        h = self.tokenizer.bpe_history(text)
        steps, before, seen = [], h.initial, set()
        for n, m in enumerate(h.steps):
            changes = [s.Change(pretoken=i, symbols=list(new)) for i, (old, new) in enumerate(zip(before, m.symbols))
                       if old != new]
            before = m.symbols
            steps.append(s.MergeStep(step=n + 1, token_id=m.token_id, left=self.piece_text(m.left),
                                     right=self.piece_text(m.right), merged=self.texts[m.token_id],
                                     count=m.count, changes=changes))
        for word in h.initial:
            seen.update(word)
        seen.update(m.token_id for m in h.steps)
        return s.BpeResponse(pretokens=list(h.pretokens), initial=[list(w) for w in h.initial], steps=steps,
                             tokens=h.final, pieces=[s.Piece(id=i, text=self.texts[i]) for i in sorted(seen)])

    async def vocab(self, query: str = "", offset: int = 0, limit: int = 50) -> s.VocabPage:
        total, entries = await anyio.to_thread.run_sync(self.tokenizer.search, query, offset, limit)
        return s.VocabPage(query=query, total=total, offset=offset, limit=limit,
                           items=[s.VocabEntryOut(id=e.id, text=e.text, bytes=list(e.bytes), partial=e.partial)
                                  for e in entries])

    # ---- model work: queued on the model thread ----

    async def next_token(self, req: s.NextTokenRequest) -> s.NextTokenResponse:
        ids = await self.input_ids(req)
        targets = [self.target_id(t) for t in req.targets]
        params = SamplingParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
        r = await self.run(analysis.next_token, self.loaded.model, ids, params, req.n, targets)
        return await off_loop(lambda: s.NextTokenResponse(
            prompt_tokens=len(ids), before=self.candidates(r["before"]), after=self.candidates(r["after"]),
            mass=r["mass"], entropy=r["entropy"], entropy_after=r["entropy_after"], support=r["support"],
            targets=[s.Target(text=self.texts[t["id"]], **t) for t in r["targets"]]))

    async def score(self, req: s.ScoreRequest) -> s.ScoreResponse:
        ids = await self.input_ids(req, reserve=int(req.prepend_eos))
        if req.prepend_eos:
            ids = [EOT_ID, *ids]
        if len(ids) < 2:
            raise InputError("scoring needs at least two tokens (the first has nothing before it to predict it); "
                             "give a longer text or set prepend_eos")
        r = await self.run(analysis.score, self.loaded.model, ids)
        return await off_loop(lambda: s.ScoreResponse(
            tokens=self.pieces(ids), mean_loss=r["mean_loss"], perplexity=r["perplexity"],
            predictions=[{**p, "text": self.texts[p["id"]], "top_text": self.texts[p["top_id"]]}
                         for p in r["predictions"]]))

    async def activations(self, req: s.ActivationsRequest) -> s.ActivationsResponse:
        ids = await self.input_ids(req)
        n, L, H = len(ids), self.config.n_layer, self.config.n_head
        bad = [p for p in req.positions or [] if p >= n]
        if bad:
            raise InputError(f"position {bad[0]} is past the prompt's end: it has {n} tokens, positions 0 to {n - 1}")
        positions = sorted(set(req.positions)) if req.positions is not None else list(range(n))
        attention: dict[int, list[int]] = {}
        for a in req.attention:
            if a.layer >= L:
                raise InputError(f"layer {a.layer} does not exist: this model has {L} layers, 0 to {L - 1}")
            heads = list(range(H)) if a.heads is None else a.heads
            if any(h >= H for h in heads):
                raise InputError(f"head {max(heads)} does not exist: this model has {H} heads per layer, 0 to {H - 1}")
            attention.setdefault(a.layer, [])
            attention[a.layer] += [h for h in heads if h not in attention[a.layer]]
        size = (len(positions) * (L + 1) * (int(req.residual_norms) + req.logit_lens)
                + len(positions) * L * req.neurons
                + sum(len(h) for h in attention.values()) * sum(p + 1 for p in positions))
        if size > self.settings.max_activation_values:
            raise InputError(f"this selection is {size:,} numbers; the limit is "
                             f"{self.settings.max_activation_values:,} — choose fewer layers, heads or positions",
                             413)
        r = await self.run(analysis.activations, self.loaded.model, ids, positions=positions,
                           residual_norms=req.residual_norms, attention=attention, neurons=req.neurons,
                           logit_lens=req.logit_lens)
        lens = [{"label": state["label"], "top": [self.candidates(row) for row in state["top"]]}
                for state in r.get("logit_lens", [])]
        return await off_loop(lambda: s.ActivationsResponse(
            tokens=self.pieces(ids), positions=r["positions"], residual_norms=r.get("residual_norms"),
            attention=r.get("attention"), neurons=r.get("neurons"), logit_lens=lens if "logit_lens" in r else None))

    async def heads(self, text: str) -> list[dict]:
        """Every head's previous-token, induction and first-token scores on the text, most induction-like first."""
        ids = await self.encode(text)
        if len(ids) < 2:
            raise InputError("the text needs at least two tokens for a head to look back at anything")
        self.check_context(len(ids))
        scores = await self.run(incontext.head_scores, self.loaded.model, [ids])
        return incontext.ranked_heads(scores)

    async def probe_heads(self) -> list[dict]:
        """The same ranking on the built-in probe (random words said twice), measured once."""
        if self._probe_heads is None:
            model = self.loaded.model
            scores = await self.run(incontext.head_scores, model, incontext.head_probe(model))
            self._probe_heads = incontext.ranked_heads(scores)
        return self._probe_heads

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn on the model thread and wait for it without blocking the event loop."""
        limit = self.settings.request_timeout_s
        try:  # a timeout cancels the job if it has not started; one already running finishes unheard
            return await asyncio.wait_for(asyncio.wrap_future(self.model_thread.submit(lambda: fn(*args, **kwargs))),
                                          limit)
        except TimeoutError:
            raise Busy(f"the model did not answer within {limit:g} s, this server's limit per request; "
                       "it is busy, try again in a moment") from None

    # ---- generation ----

    async def generate(self, prompt: str | list[int], max_new_tokens: int | None, params: SamplingParams,
                       seed: int | None = None, stop: Sequence[str] = (), n_top: int = 5,
                       limit_name: str = "max_new_tokens") -> Generation:
        """Start a stream; iterate the returned Generation for its events.

        An empty prompt starts from <|endoftext|>, as GPT-2 saw the start of
        every document. max_new_tokens None means "to the server's cap"; over
        the cap is refused (the message names it limit_name). The stream ends
        with reason "length" at the context's end, however many tokens were
        asked for.
        """
        ids = list(prompt) if isinstance(prompt, list) else await self.encode(prompt)
        self.check_ids(ids)
        ids = ids or [EOT_ID]
        self.check_context(len(ids))
        cap = self.settings.max_new_tokens
        if max_new_tokens is not None and max_new_tokens > cap:
            raise InputError(f"{limit_name} is {max_new_tokens:,}; this server generates at most {cap:,} "
                             "tokens per request")
        room = self.config.n_ctx - len(ids)
        gen = Generation(self, ids, params, min(max_new_tokens or cap, room), seed, n_top, stop)
        self.model_thread.add_stream(gen)
        return gen

    # ---- helpers, also for the pages ----

    def check_text(self, text: str, what: str = "text") -> None:
        cap = self.settings.max_text_chars
        if len(text) > cap:
            raise InputError(f"{what} is {len(text):,} characters; the limit is {cap:,}", 413)

    def check_ids(self, ids: Sequence[int]) -> None:
        cap = self.settings.max_text_chars
        if len(ids) > cap:
            raise InputError(f"{len(ids):,} ids were given; the limit is {cap:,}", 413)
        bad = next((i for i in ids if not 0 <= i < self.config.vocab_size), None)
        if bad is not None:
            raise InputError(f"{bad} is not a token id: ids run from 0 to {self.config.vocab_size - 1:,}")

    def check_context(self, n: int) -> None:
        if n > self.config.n_ctx:
            raise InputError(f"prompt is {n:,} tokens; this model reads at most {self.config.n_ctx:,}")

    async def encode(self, text: str) -> list[int]:
        self.check_text(text)
        return await anyio.to_thread.run_sync(self.tokenizer.encode, text)

    async def input_ids(self, req: s.TextOrIds, reserve: int = 0) -> list[int]:
        """A request's input as ids, checked: at least one token, no more than the context holds."""
        ids = req.ids if req.ids is not None else await self.encode(req.text)
        self.check_ids(ids)
        if not ids and not reserve:
            raise InputError("the input is empty; give at least one token")
        self.check_context(len(ids) + reserve)
        return ids

    def target_id(self, target: int | str) -> int:
        if isinstance(target, int):
            self.check_ids([target])
            return target
        ids = self.tokenizer.encode(target)
        if len(ids) != 1:
            raise InputError(f"target {target!r} is {len(ids)} tokens ({', '.join(map(repr, map(self.texts.__getitem__, ids)))}); "
                             "name a text that is exactly one token, or give its id")
        return ids[0]

    def token_out(self, id: int) -> s.TokenOut:
        e = self.tokenizer.lookup(id)
        return s.TokenOut(id=e.id, text=e.text, bytes=list(e.bytes), partial=e.partial)

    def piece_text(self, data: bytes) -> str:
        return data.decode("utf-8", errors="backslashreplace")

    def pieces(self, ids: Sequence[int]) -> list[s.Piece]:
        return [s.Piece(id=i, text=self.texts[i]) for i in ids]

    def candidates(self, cands: list[dict]) -> list[dict]:
        """Token dicts with their text added (dicts: the response model validates them in one pass)."""
        return [{**c, "text": self.texts[c["id"]]} for c in cands]

    def step_candidates(self, cands: Sequence[Any]) -> list[s.Candidate]:
        return [s.Candidate(id=c.id, text=self.texts[c.id], prob=analysis.rounded(c.prob),
                            logit=analysis.rounded(c.logit)) for c in cands]

    def token_event(self, n: int, step: Step, text: str) -> s.TokenEvent:
        return s.TokenEvent(step=n, id=step.id, text=text, piece=self.texts[step.id],
                            prob=analysis.rounded(step.prob), raw_prob=analysis.rounded(step.raw_prob),
                            entropy=analysis.rounded(step.entropy),
                            before=self.step_candidates(step.before), after=self.step_candidates(step.after))


async def off_loop(build: Callable[[], T]) -> T:
    """Build a response in a worker thread: one can hold 50,257 candidates, too many for the event loop."""
    return await anyio.to_thread.run_sync(build)


def card_summary(card: dict | None) -> s.CardSummary | None:
    """The few figures of a model card a page shows; whatever a card lacks stays empty."""
    if not isinstance(card, dict):
        return None

    def get(*path: str) -> Any:
        node: Any = card
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    def number(v: Any) -> float | None:
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None

    baselines = get("evaluation", "baselines")
    return s.CardSummary(
        description=get("description") if isinstance(get("description"), str) else None,
        training_tokens=int(v) if (v := number(get("training", "tokens_seen"))) is not None else None,
        training_steps=int(v) if (v := number(get("training", "steps"))) is not None else None,
        validation_loss=number(get("evaluation", "tinystories_valid_loss")),
        baselines={k: v for k, v in (baselines or {}).items() if number(v) is not None}
        if isinstance(baselines, dict) else {},
        corpus=[str(k) for k in get("corpus")] if isinstance(get("corpus"), dict) else [],
        licences={str(k): str(v) for k, v in get("licences").items()} if isinstance(get("licences"), dict) else {},
    )
