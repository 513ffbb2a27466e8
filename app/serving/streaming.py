"""Streaming generation: the stream a consumer iterates, text cut cleanly at stop texts, and the
Server-Sent Events that carry a stream (and a class session's events) to a browser."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.schemas import answers as an
from model.decode.sampling import SamplingParams, Step, Utf8Stream


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
    The model's end-of-text token (eos_id: GPT-2's <|endoftext|>) ends the stream
    (reason "eos") and is not itself an event. Call cancel() (idempotent) when the consumer goes away; the model
    stops working on it before its next step.
    """

    def __init__(self, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int,
                 seed: int | None, n_top: int, stop: Sequence[str], *, on_cancel: Callable[[Generation], None],
                 event: Callable[[int, Step, str], an.TokenEvent], token_bytes: Callable[[int], bytes],
                 timeout_s: float, eos_id: int | None):
        self.on_cancel = on_cancel      # tells the model thread to stop working on this stream
        self.event = event              # (n, step, text) -> the event a consumer sees
        self.token_bytes = token_bytes  # token id -> its bytes
        self.timeout_s = timeout_s
        self.eos_id = eos_id            # the token that ends the text; None: only the length does
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
            self.on_cancel(self)

    async def __aiter__(self) -> AsyncIterator[an.TokenEvent | an.DoneEvent]:
        texts = TextStream(self.stop)
        first: float | None = None
        count, reason, message = 0, "length", None
        deadline = self._started + self.timeout_s
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.perf_counter()))
                except TimeoutError:
                    reason = "timeout"
                    message = (f"generation stopped after {self.timeout_s:g} s, "
                               "this server's limit per request; ask for fewer tokens")
                    break
                if item[0] == "end":
                    _, reason, message = item
                    break
                step: Step = item[1]
                if step.id == self.eos_id:
                    continue  # the "end" that follows says eos
                first = first or time.perf_counter()
                count += 1
                piece = texts.push(self.token_bytes(step.id))
                yield self.event(count - 1, step, piece)
                if texts.stopped:
                    reason = "stop"
                    break
        finally:
            self.cancel()
        total = time.perf_counter() - self._started
        yield an.DoneEvent(
            finish_reason=reason, prompt_tokens=len(self.prompt_ids), completion_tokens=count,
            text=texts.flush(), message=message,
            timings=an.Timings(first_token_ms=None if first is None else round((first - self._started) * 1000, 1),
                              total_ms=round(total * 1000, 1),
                              tokens_per_second=round(count / total, 2) if total > 0 else 0.0))


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class EventStream(StreamingResponse):
    """An SSE response that cancels its generation however the response ends (done, error, disconnect)."""

    media_type = "text/event-stream"

    def __init__(self, gen: Cancellable, events: AsyncIterator[str]):
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.gen = gen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.gen.cancel()


def sse(data: str, event: str | None = None) -> str:
    """One Server-Sent Event: its name (none: a plain message, EventSource's onmessage) and its data, a line of
    the event per line of data (EventSource joins them again with newlines; a lone CR ends a line too)."""
    lines = re.split(r"\r\n|\r|\n", data)
    return (f"event: {event}\n" if event else "") + "".join(f"data: {line}\n" for line in lines) + "\n"
