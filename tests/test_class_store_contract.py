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
from app.classroom.store.base import QUEUE_EVENTS, CodeTaken, Gone, Store, StoreFull
from app.classroom.store.memory import MemoryStore
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
    from app.classroom.store.redis import RedisStore

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
        full = await store.add_student("ACDEFG", "st-1", "", now=2000.5)  # a known student, whatever the count
        assert full.nickname == "Ann" and full.joined == 2000.5
        assert not await store.remove_student("ACDEFG", "st-1", unless_joined_after=1500.0)  # came back later
        assert await store.remove_student("ACDEFG", "st-1", unless_joined_after=2000.5)
        assert not await store.remove_student("ACDEFG", "st-1")  # gone already
        assert list((await store.get("ACDEFG")).students) == ["st-2"]
        await store.add_student("ACDEFG", "st-3", "")  # the place it left is free
        with pytest.raises(StoreFull):
            await store.add_student("ACDEFG", "st-4", "")
        with pytest.raises(Gone):
            await store.add_student("QQQQQQ", "st-1", "")

    run(make, body)


def test_guesses_count_the_latest_and_events_reach_followers(make) -> None:
    async def body(store: Store) -> None:
        await store.create(session("ACDEFG"))
        await store.put_guess("ACDEFG", 1, "st-1", 11)
        await store.put_guess("ACDEFG", 1, "st-1", 12)
        await store.put_guess("ACDEFG", 1, "st-2", 13)
        await store.put_guess("ACDEFG", 2, "st-1", 9)  # each round keeps its own
        assert await store.guesses("ACDEFG", 1) == {"st-1": 12, "st-2": 13}
        assert await store.guesses("ACDEFG", 2) == {"st-1": 9} and await store.guesses("ACDEFG", 3) == {}
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


def test_a_save_keeps_the_students_and_an_end_takes_everything(make) -> None:
    async def body(store: Store) -> None:
        s = session("ACDEFG")
        s.stepper.prompt = "Once upon a <b>time</b> 🐉"
        await store.create(s)
        got = await store.get("ACDEFG")
        assert got.to_json() == s.to_json()
        await store.add_student("ACDEFG", "st-1", "Ada", now=1000.25)
        got.stepper.steps = "612"
        got.rounds_opened = 3
        assert await store.save(got)
        # a save from a copy read before the join keeps the student: students change only through add/remove
        stale = await store.get("ACDEFG")
        stale.students = {}
        stale.leaderboard = True
        assert await store.save(stale)
        back = await store.get("ACDEFG")
        assert back.stepper.steps == "612" and back.rounds_opened == 3 and back.leaderboard
        assert list(back.students) == ["st-1"] and back.students["st-1"].nickname == "Ada"

        await store.put_guess("ACDEFG", 1, "st-1", 612)
        await store.delete("ACDEFG")
        assert await store.get("ACDEFG") is None and await store.guesses("ACDEFG", 1) == {}
        assert not await store.save(back)  # ended: nothing is written back
        assert await store.get("ACDEFG") is None
        with pytest.raises(Gone):
            await store.add_student("ACDEFG", "st-2", "")
        with pytest.raises(Gone):
            await store.put_guess("ACDEFG", 1, "st-1", 612)

    run(make, body)


def test_a_full_server_says_so_and_an_ended_session_frees_its_place(make) -> None:
    async def body(store: Store) -> None:
        assert await store.running() == 0
        for code in ("ACDEFG", "ACDEFH", "ACDEFJ"):
            await store.create(session(code))
        assert await store.running() == 3
        with pytest.raises(StoreFull) as full:
            await store.create(session("ACDEFK"))
        assert str(full.value).startswith("This server already runs 3 class sessions")
        await store.delete("ACDEFH")
        assert await store.running() == 2
        await store.create(session("ACDEFK"))

    run(make, body)


def test_writes_keep_a_session_alive_and_an_expired_one_frees_its_place(make) -> None:
    async def body(store: Store) -> None:
        await store.create(session("ACDEFG"))
        with pytest.raises(StoreFull):
            await store.create(session("ACDEFH"))
        await store.add_student("ACDEFG", "st-1", "")
        await store.put_guess("ACDEFG", 1, "st-1", 42)
        for _ in range(3):  # writes every 0.3 s keep it alive past its 0.6 s
            await asyncio.sleep(0.3)
            await store.put_guess("ACDEFG", 1, "st-1", 43)
        got = await store.get("ACDEFG")
        assert got is not None and list(got.students) == ["st-1"]
        assert await store.guesses("ACDEFG", 1) == {"st-1": 43}
        await asyncio.sleep(0.75)  # no write since: it has gone, and its place is free
        assert await store.get("ACDEFG") is None
        await store.create(session("ACDEFH"))

    def quick(**limits):
        return make(ttl_s=0.6, max_sessions=1, **limits)

    run(quick, body)


def test_every_follower_hears_its_own_session_and_a_slow_one_loses_old_events(make) -> None:
    async def body(store: Store) -> None:
        followers = [await store.subscribe("ACDEFG") for _ in range(3)]
        elsewhere = await store.subscribe("ACDEFH")
        sent = [{"kind": "round", "no": 1}, {"kind": "reveal", "no": 1, "text": "<i>é</i> 🐉"}]
        for event in sent:
            await store.publish("ACDEFG", event)
        for f in followers:
            assert [await asyncio.wait_for(anext(f), 2) for _ in sent] == sent
        # one follower leaves; the others still hear, and the other session heard nothing
        await followers[0].aclose()
        await store.publish("ACDEFG", {"kind": "step"})
        assert await asyncio.wait_for(anext(followers[1]), 2) == {"kind": "step"}
        assert await asyncio.wait_for(anext(followers[2]), 2) == {"kind": "step"}
        assert elsewhere.queue.empty()
        for f in (*followers[1:], elsewhere):
            await f.aclose()

        slow, quick = await store.subscribe("ACDEFG"), await store.subscribe("ACDEFG")
        got = []
        for start in range(0, 200, 20):  # the quick one reads as it goes, the slow one never does
            for i in range(start, start + 20):
                await store.publish("ACDEFG", {"n": i})
            got += [(await asyncio.wait_for(anext(quick), 2))["n"] for _ in range(20)]
        assert got == list(range(200))
        kept = [(await anext(slow))["n"] for _ in range(slow.queue.qsize())]
        assert kept == list(range(200 - QUEUE_EVENTS, 200))  # not the publisher held back: the oldest dropped
        await slow.aclose()
        await quick.aclose()

    run(make, body)
