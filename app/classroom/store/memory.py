"""The in-process store: sessions in this process's memory, one server process serving the class."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from app.classroom.state import Session, Student
from app.classroom.store.base import QUEUE_EVENTS, CodeTaken, Events, Gone, Store, StoreFull


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

    async def running(self) -> int:
        self._expire()
        return len(self._sessions)

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
