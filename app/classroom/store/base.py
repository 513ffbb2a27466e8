"""The class store's interface and the contract every store keeps (store/memory.py in this process;
store/redis.py behind the same methods when DEEPDIVE_REDIS_URL is set, so several server processes share one
class):

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

from abc import ABC, abstractmethod

from app.classroom.state import Session, Student
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
    async def running(self) -> int:
        """How many sessions are live now."""

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
