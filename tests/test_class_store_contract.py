"""The class store's contract (app/classroom/store.py), one suite run against both stores: this process's
memory and a real redis-server (started here on a free port; in CI it must be installed)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.classroom.state import Session
from app.classroom.store import CodeTaken, Gone, MemoryStore, Store, StoreFull
from redis_server import REDIS_SERVER, RedisServer

LIMITS = {"ttl_s": 60.0, "max_sessions": 3, "max_students": 2}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if REDIS_SERVER is None and not os.environ.get("CI"):
        pytest.skip("redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)")
    server = RedisServer(Path(tmp_path_factory.mktemp("redis-contract")))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest):
    """A factory of fresh stores of one kind (Redis: flushed first, so each test starts empty)."""
    if request.param == "memory":
        return lambda **limits: MemoryStore(**{**LIMITS, **limits})
    url = request.getfixturevalue("redis_url")
    from app.classroom.redis_store import RedisStore

    async def flush() -> None:
        store = RedisStore(url, **LIMITS)
        await store.redis.flushdb()
        await store.close()

    asyncio.run(flush())
    return lambda **limits: RedisStore(url, **{**LIMITS, **limits})


def session(code: str) -> Session:
    now = time.time()
    return Session(code=code, secret_hash="0" * 64, created=now, active=now)


def run(make, body) -> None:
    async def main() -> None:
        store: Store = make()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def test_sessions_are_created_read_saved_and_ended(make) -> None:
    async def body(store: Store) -> None:
        s = session("ACDEFG")
        s.stepper.prompt = "Once upon a <b>time</b> 🐉"
        await store.create(s)
        with pytest.raises(CodeTaken):
            await store.create(session("ACDEFG"))
        got = await store.get("ACDEFG")
        assert got.stepper.prompt == s.stepper.prompt and await store.get("QQQQQQ") is None
        got.rounds_opened = 2
        assert await store.save(got) and (await store.get("ACDEFG")).rounds_opened == 2
        assert await store.fate("ACDEFG") is None  # live
        await store.delete("ACDEFG")
        assert await store.get("ACDEFG") is None and not await store.save(got)
        assert await store.fate("ACDEFG") == "ended"
        assert await store.fate("QQQQQQ") is None  # never there: a page that knew it says it was lost
        for _ in range(3):
            await store.create(session(f"ACDEF{'HJK'[_]}"))
        with pytest.raises(StoreFull):
            await store.create(session("ACDEFM"))

    run(make, body)


def test_students_join_reconnect_and_leave(make) -> None:
    async def body(store: Store) -> None:
        await store.create(session("ACDEFG"))
        await store.add_student("ACDEFG", "st-1", "Ann", now=1000.5)
        back = await store.add_student("ACDEFG", "st-1", "", now=2000.25)  # a reconnect keeps the name
        assert back.nickname == "Ann" and back.joined == 2000.25
        await store.add_student("ACDEFG", "st-2", "")
        with pytest.raises(StoreFull):
            await store.add_student("ACDEFG", "st-3", "")
        assert not await store.remove_student("ACDEFG", "st-1", unless_joined_after=1500.0)  # came back later
        assert await store.remove_student("ACDEFG", "st-1", unless_joined_after=2000.25)
        assert list((await store.get("ACDEFG")).students) == ["st-2"]
        with pytest.raises(Gone):
            await store.add_student("QQQQQQ", "st-1", "")

    run(make, body)


def test_guesses_count_the_latest_and_events_reach_followers(make) -> None:
    async def body(store: Store) -> None:
        await store.create(session("ACDEFG"))
        await store.put_guess("ACDEFG", 1, "st-1", 11)
        await store.put_guess("ACDEFG", 1, "st-1", 12)
        await store.put_guess("ACDEFG", 1, "st-2", 13)
        assert await store.guesses("ACDEFG", 1) == {"st-1": 12, "st-2": 13}
        with pytest.raises(Gone):
            await store.put_guess("QQQQQQ", 1, "st-1", 1)
        events = await store.subscribe("ACDEFG")
        await store.publish("ACDEFG", {"type": "count", "answers": 2})
        assert await asyncio.wait_for(anext(events), 5) == {"type": "count", "answers": 2}
        await events.aclose()

    run(make, body)


def test_a_quiet_session_expires_and_says_so(make) -> None:
    async def body(store: Store) -> None:
        await store.create(session("ACDEFG"))
        await asyncio.sleep(1.3)
        assert await store.get("ACDEFG") is None
        assert await store.fate("ACDEFG") == "expired"
        await store.create(session("ACDEFG"))  # the code is free again, and live
        assert await store.fate("ACDEFG") is None

    def quick(**limits):
        return make(ttl_s=1.0, **limits)

    run(quick, body)
