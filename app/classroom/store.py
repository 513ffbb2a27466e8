"""Where class sessions live: the store interface, the in-process store, and the choice between stores.

The contract every store keeps (MemoryStore here; app/classroom/redis_store.py behind the same
methods when DEEPDIVE_REDIS_URL is set, so several server processes share one class):

- `create(session)` stores a new session under `session.code`. It raises CodeTaken when a live
  session already holds the code (the caller draws another) and StoreFull when `max_sessions`
  live sessions exist. Redis: `SET class:{code} <session.to_json()> NX EX <ttl>`.
- `get(code)` is the session with its students filled in, or None when the code is unknown or
  expired. It does not refresh the expiry. Redis: the JSON blob plus the students hash.
- `save(session)` writes everything but `students` (and sets `session.active`); students change
  only through add_student/remove_student, so a join in one process is never lost to a save in
  another. Saving a session that has expired or been deleted does nothing and returns False.
- `delete(code)` removes the session, its students and its guesses.
- `fate(code)` says what became of a session that is no longer there, for `ttl_s` after: "ended" (deleted)
  or "expired"; None when the store knows nothing of it (never there, or lost with a restarted store:
  a page that knew the session then says it was lost). Redis: `class:{code}:fate`, and the expiry time
  kept in `classes:live` for a while.
- `add_student(code, student_id, nickname, now)` adds a student or, for a known id, refreshes
  its `joined` time (a reconnect) and keeps its nickname when the new one is empty. StoreFull
  when `max_students` others are there; Gone when the session is not. Redis: a hash
  `class:{code}:students` of student id -> student_to_json().
- `remove_student(code, student_id, unless_joined_after=None)` removes the student and says
  whether it did; with `unless_joined_after`, only if its latest connection opened no later
  than that time (a phone that reconnected meanwhile, to any process, keeps its place).
- `put_guess(code, round_no, student_id, token_id)` records a guess; the latest counts.
  `guesses(code, round_no)` is {student id: token id}. Redis: a hash `class:{code}:round:{n}`.
- `publish(code, event)` sends a JSON-serialisable dict to every subscriber of the session, in
  every process. `events = await subscribe(code)` is an async iterator of the events published
  after the await returns (the subscription is in place by then); close it with
  `await events.aclose()`. Redis: pub/sub channel `class:{code}:events`. A slow
  subscriber may miss events but never blocks the publisher: events say what changed, and
  the state itself is always read back from the store.
- Every write (save, add_student, put_guess) refreshes the session's expiry: it lives `ttl_s`
  seconds after the last one. Redis: EXPIRE on the session's keys.

Errors are StoreError subclasses whose message is a sentence a person can act on.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace

from app.classroom.state import Session, Student
from app.config import Settings
from app.problems import Busy, sentence

QUEUE_EVENTS = 64  # events one subscriber may fall behind by before older ones are dropped


class StoreError(Exception):
    """A refusal from the store; the message is a sentence for the person who asked."""


class CodeTaken(StoreError):
    pass


class StoreFull(StoreError):
    pass


class Gone(StoreError):
    pass


class Unavailable(Busy):
    """The store does not answer (Redis is away). Not a StoreError (a refusal of what was asked): like a busy
    model, it is the server's trouble, answered 503 with a sentence, and the request can be tried again."""

    @property
    def sentence(self) -> str:
        return sentence(str(self))


class Events(ABC):
    """A subscription: an async iterator of a session's events; aclose() ends it."""

    def __aiter__(self) -> Events:
        return self

    @abstractmethod
    async def __anext__(self) -> dict: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class Store(ABC):
    """The methods every store provides; see the module docstring for the contract."""

    def __init__(self, ttl_s: float, max_sessions: int, max_students: int):
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.max_students = max_students

    @abstractmethod
    async def create(self, session: Session) -> None:
        ...

    @abstractmethod
    async def get(self, code: str) -> Session | None:
        ...

    @abstractmethod
    async def save(self, session: Session) -> bool:
        ...

    @abstractmethod
    async def delete(self, code: str) -> None:
        ...

    @abstractmethod
    async def fate(self, code: str) -> str | None:
        ...

    @abstractmethod
    async def add_student(self, code: str, student_id: str, nickname: str, now: float | None = None) -> Student:
        ...

    @abstractmethod
    async def remove_student(self, code: str, student_id: str, unless_joined_after: float | None = None) -> bool:
        ...

    @abstractmethod
    async def put_guess(self, code: str, round_no: int, student_id: str, token_id: int) -> None:
        ...

    @abstractmethod
    async def guesses(self, code: str, round_no: int) -> dict[str, int]:
        ...

    @abstractmethod
    async def publish(self, code: str, event: dict) -> None:
        ...

    @abstractmethod
    async def subscribe(self, code: str) -> Events:
        ...

    async def close(self) -> None:
        """Release connections (the app's shutdown calls it)."""

    def full_message(self) -> str:
        return (f"This server already runs {self.max_sessions} class sessions, the most it holds; "
                "end one or try again later.")

    def crowded_message(self) -> str:
        return f"This class already has {self.max_students} students, the most a session holds; ask the teacher."


class MemoryStore(Store):
    """Sessions in this process's memory: one server process serves the class."""

    def __init__(self, ttl_s: float, max_sessions: int, max_students: int):
        super().__init__(ttl_s, max_sessions, max_students)
        self._sessions: dict[str, Session] = {}
        self._guesses: dict[tuple[str, int], dict[str, int]] = {}
        self._queues: dict[str, set[asyncio.Queue]] = {}
        self._fates: dict[str, tuple[str, float]] = {}  # code -> ("ended" or "expired", when)

    def _live(self, code: str) -> Session | None:
        self._expire()
        return self._sessions.get(code)

    def _expire(self) -> None:
        now = time.time()
        cutoff = now - self.ttl_s
        for code in [c for c, s in self._sessions.items() if s.active < cutoff]:
            self._drop(code, "expired")
        self._fates = {c: f for c, f in self._fates.items() if f[1] > cutoff}

    def _drop(self, code: str, fate: str) -> None:
        if self._sessions.pop(code, None) is not None:
            self._fates[code] = (fate, time.time())
        for key in [k for k in self._guesses if k[0] == code]:
            del self._guesses[key]

    async def create(self, session: Session) -> None:
        if self._live(session.code) is not None:
            raise CodeTaken(f"The code {session.code} is in use.")
        if len(self._sessions) >= self.max_sessions:
            raise StoreFull(self.full_message())
        session.active = time.time()
        self._fates.pop(session.code, None)
        self._sessions[session.code] = replace(session, students={})

    async def get(self, code: str) -> Session | None:
        stored = self._live(code)
        if stored is None:
            return None
        # a copy, as a store across processes would hand out: changes count only once saved
        return Session.from_json(stored.to_json(), dict(stored.students))

    async def save(self, session: Session) -> bool:
        stored = self._live(session.code)
        if stored is None:
            return False
        session.active = time.time()
        self._sessions[session.code] = Session.from_json(session.to_json(), stored.students)
        return True

    async def delete(self, code: str) -> None:
        self._drop(code, "ended")

    async def fate(self, code: str) -> str | None:
        self._expire()
        return None if code in self._sessions or code not in self._fates else self._fates[code][0]

    async def add_student(self, code: str, student_id: str, nickname: str, now: float | None = None) -> Student:
        stored = self._live(code)
        if stored is None:
            raise Gone("This class session has ended or expired; ask the teacher for the new code.")
        old = stored.students.get(student_id)
        if old is None and len(stored.students) >= self.max_students:
            raise StoreFull(self.crowded_message())
        student = Student(nickname=nickname or (old.nickname if old else ""), joined=now or time.time())
        stored.students[student_id] = student
        stored.active = time.time()
        return student

    async def remove_student(self, code: str, student_id: str, unless_joined_after: float | None = None) -> bool:
        stored = self._live(code)
        student = stored.students.get(student_id) if stored else None
        if student is None or (unless_joined_after is not None and student.joined > unless_joined_after):
            return False
        del stored.students[student_id]
        return True

    async def put_guess(self, code: str, round_no: int, student_id: str, token_id: int) -> None:
        stored = self._live(code)
        if stored is None:
            raise Gone("This class session has ended or expired; ask the teacher for the new code.")
        self._guesses.setdefault((code, round_no), {})[student_id] = token_id
        stored.active = time.time()

    async def guesses(self, code: str, round_no: int) -> dict[str, int]:
        return dict(self._guesses.get((code, round_no), {}))

    async def publish(self, code: str, event: dict) -> None:
        for queue in self._queues.get(code, ()):
            if queue.full():  # a slow follower loses its oldest event, not the publisher its turn
                queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self, code: str) -> Events:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_EVENTS)
        self._queues.setdefault(code, set()).add(queue)

        def unsubscribe() -> None:
            queues = self._queues.get(code, set())
            queues.discard(queue)
            if not queues:
                self._queues.pop(code, None)

        return QueueEvents(queue, unsubscribe)


class QueueEvents(Events):
    """A subscription of the memory store: the events its queue receives."""

    def __init__(self, queue: asyncio.Queue, unsubscribe: Callable[[], None]):
        self.queue = queue
        self.unsubscribe = unsubscribe

    async def __anext__(self) -> dict:
        return await self.queue.get()

    async def aclose(self) -> None:
        self.unsubscribe()


def make_store(settings: Settings) -> Store:
    """The store the settings ask for: Redis when DEEPDIVE_REDIS_URL is set, else this process's memory."""
    limits = {"ttl_s": settings.class_ttl_s, "max_sessions": settings.max_class_sessions,
              "max_students": settings.max_class_students}
    if settings.redis_url:
        from app.classroom.redis_store import RedisStore  # only a server configured for Redis needs the client

        return RedisStore(settings.redis_url, **limits, timeout_s=settings.redis_timeout_s,
                          retries=settings.redis_retries)
    return MemoryStore(**limits)
