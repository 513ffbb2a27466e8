"""The thread that runs the model.

Every request's model work runs on ONE thread, so forwards never run forty at a
time on a laptop's few cores and the event loop never waits on torch. The thread
alternates: one queued analysis job (next-token, score, activations), then one
decode step for every stream being generated (continuous batching: streams join
and leave between steps). A full queue is Busy (503).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from app.config import Settings
from app.problems import Busy
from model.decode.batching import BatchDecoder
from model.loading import LoadedModel

if TYPE_CHECKING:
    from app.serving.streaming import Generation

log = logging.getLogger("deepdive.model_thread")
T = TypeVar("T")


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
            raise Busy("The model is not running (the server is starting or stopping): try again in a moment")

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
        self._end_all("The server is shutting down: try again once it is back")
        with self._cond:
            jobs = list(self._jobs)
            self._jobs.clear()
        for fut, _ in jobs:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(Busy("The server is shutting down: try again once it is back"))

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
            if ev.step.id == gen.eos_id or ev.finished:
                if not ev.finished:
                    self._decoder.cancel(ev.seq_id)
                del self._active[ev.seq_id]
                self._end(gen, "eos" if ev.step.id == gen.eos_id else "length")  # "context" is a length too

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
