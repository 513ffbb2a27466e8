"""Class sessions in Redis: the store against a real redis-server, then two server processes sharing one class.

redis-server is Debian's (scripts/test.sh installs it, as it installs Chromium); each test
module run starts its own on a free port in a temporary directory, with persistence off.
Outside CI the tests are skipped when redis-server is not installed; in CI they must run.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.classroom.store.redis import RedisStore, Unavailable
from app.classroom.state import Session
from app.classroom.store.base import CodeTaken, Gone, StoreFull
from helpers import expect_http_error
from redis_server import REDIS_SERVER, RedisServer, free_port

if REDIS_SERVER is None and not os.environ.get("CI"):
    pytest.skip("redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def run(coro):
    return asyncio.run(coro)


CODES = iter(f"T{a}{b}{c}{d}" for a in "ACDEF" for b in "GHJKM" for c in "NPQRT" for d in "UVWXY")


def new_session(code: str | None = None) -> Session:
    now = time.time()
    return Session(code=code or next(CODES), secret_hash="0" * 64, created=now, active=now)


def store(url: str, **limits) -> RedisStore:
    return RedisStore(url, **{"ttl_s": 60.0, "max_sessions": 1000, "max_students": 200, **limits})


# ---------------------------------------------------------------- the store across processes
# (what every store does, one process's memory or Redis, is the contract: test_class_store_contract.py)

def test_create_get_save_delete(redis_server: RedisServer) -> None:
    async def main() -> None:
        a, b = store(redis_server.url), store(redis_server.url)  # two processes' stores
        s = new_session()
        s.stepper.prompt = "Once upon a <b>time</b> 🐉"
        await a.create(s)
        with pytest.raises(CodeTaken):
            await b.create(new_session(s.code))
        got = await b.get(s.code)
        assert got is not None and got.to_json() == s.to_json()
        assert await b.get("TZZZZ") is None

        await b.add_student(s.code, "st-1", "Ada", now=1000.25)
        got.stepper.steps = "612"
        got.rounds_opened = 3
        assert await b.save(got)
        # a save from a copy read before the join keeps the student: students change only through add/remove
        stale = await a.get(s.code)
        stale.students = {}
        stale.leaderboard = True
        assert await a.save(stale)
        back = await a.get(s.code)
        assert back.stepper.steps == "612" and back.rounds_opened == 3 and back.leaderboard
        assert list(back.students) == ["st-1"] and back.students["st-1"].nickname == "Ada"

        await a.put_guess(s.code, 1, "st-1", 612)
        await a.delete(s.code)
        assert await b.get(s.code) is None
        assert await b.guesses(s.code, 1) == {}
        assert not await b.save(back)  # deleted: nothing is written back
        assert await b.get(s.code) is None
        with pytest.raises(Gone):
            await b.add_student(s.code, "st-2", "")
        with pytest.raises(Gone):
            await b.put_guess(s.code, 1, "st-1", 612)
        await a.close()
        await b.close()

    run(main())


def test_bounds_hold_across_processes(redis_server: RedisServer) -> None:
    async def main() -> None:
        url = redis_server.url
        await with_flush(url)
        a, b = store(url, max_sessions=3, max_students=2), store(url, max_sessions=3, max_students=2)
        # six creators race for three places: exactly three get one
        got = await asyncio.gather(*[(a if i % 2 else b).create(new_session()) for i in range(6)],
                                   return_exceptions=True)
        assert sum(r is None for r in got) == 3
        refused = [r for r in got if r is not None]
        assert all(isinstance(r, StoreFull) for r in refused)
        assert str(refused[0]).startswith("This server already runs 3 class sessions")

        code = (await a.redis.zrange("classes:live", 0, 0))[0]
        await a.delete(code)
        await b.create(s := new_session())  # a deleted session frees its place

        # two places; four phones race for them through both processes
        joins = await asyncio.gather(*[(a if i % 2 else b).add_student(s.code, f"st-{i}", f"n{i}")
                                       for i in range(4)], return_exceptions=True)
        assert sum(not isinstance(r, Exception) for r in joins) == 2
        assert all(isinstance(r, StoreFull) for r in joins if isinstance(r, Exception))
        inside = sorted((await a.get(s.code)).students)
        assert len(inside) == 2
        # a known student reconnects whatever the count, and keeps its nickname when it sends none
        again = await b.add_student(s.code, inside[0], "", now=5000.125)
        assert again.joined == 5000.125 and again.nickname == f"n{inside[0][3:]}"
        # a closed tab frees its place, unless the phone reconnected since (to any process)
        assert not await a.remove_student(s.code, inside[0], unless_joined_after=5000.124)
        assert await a.remove_student(s.code, inside[0], unless_joined_after=5000.125)
        assert not await a.remove_student(s.code, inside[0])
        await b.add_student(s.code, "st-new", "")
        await a.close()
        await b.close()

    run(main())


async def with_flush(url: str) -> None:
    s = store(url)
    await s.redis.flushdb()
    await s.close()


def test_an_expired_session_leaves_no_key_behind(redis_server: RedisServer) -> None:
    """Expiry itself, and writes that keep a session alive, are in the store contract (test_class_store_contract.py)."""
    async def main() -> None:
        a = store(redis_server.url, ttl_s=0.6)
        s = new_session()
        await a.create(s)
        await a.add_student(s.code, "st-1", "")
        await a.put_guess(s.code, 1, "st-1", 42)
        await asyncio.sleep(0.75)
        assert await a.get(s.code) is None
        assert await a.redis.keys(f"class:{s.code}*") == []
        await a.close()

    run(main())


def test_guesses_from_two_processes_never_overwrite_each_other(redis_server: RedisServer) -> None:
    async def main() -> None:
        a, b = store(redis_server.url), store(redis_server.url)
        s = new_session()
        await a.create(s)
        await asyncio.gather(*[(a if i % 2 else b).put_guess(s.code, 4, f"st-{i}", 1000 + i) for i in range(40)])
        # the same phone guessing again: the latest counts
        await b.put_guess(s.code, 4, "st-7", 7)
        await a.put_guess(s.code, 5, "st-7", 9)
        assert await a.guesses(s.code, 4) == {f"st-{i}": (7 if i == 7 else 1000 + i) for i in range(40)}
        assert await b.guesses(s.code, 5) == {"st-7": 9}
        assert await b.guesses(s.code, 6) == {}
        await a.close()
        await b.close()

    run(main())


def test_events_reach_every_follower_in_every_process(redis_server: RedisServer) -> None:
    async def main() -> None:
        a, b = store(redis_server.url), store(redis_server.url)
        s, other = new_session(), new_session()
        followers = [await a.subscribe(s.code), await a.subscribe(s.code), await b.subscribe(s.code)]
        elsewhere = await b.subscribe(other.code)
        sent = [{"kind": "round", "no": 1}, {"kind": "reveal", "no": 1, "text": "<i>é</i> 🐉"}]
        for event in sent:
            await b.publish(s.code, event)
        for f in followers:
            assert [await asyncio.wait_for(anext(f), 2) for _ in sent] == sent
        # one follower leaves; the others in its process still hear, and the other session heard nothing
        await followers[0].aclose()
        await a.publish(s.code, {"kind": "step"})
        assert await asyncio.wait_for(anext(followers[1]), 2) == {"kind": "step"}
        assert await asyncio.wait_for(anext(followers[2]), 2) == {"kind": "step"}
        assert elsewhere.queue.empty()
        # the process holds one subscription per session, not one per follower
        assert await a.redis.pubsub_numsub(f"class:{s.code}:events") == [(f"class:{s.code}:events", 2)]
        for f in (*followers[1:], elsewhere):
            await f.aclose()
        assert await a.redis.pubsub_numsub(f"class:{s.code}:events") == [(f"class:{s.code}:events", 0)]
        await a.close()
        await b.close()

    run(main())


def test_redis_away_is_a_sentence_not_a_crash(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()

    async def main() -> None:
        a = store(server.url)
        s = new_session()
        await a.create(s)
        follower = await a.subscribe(s.code)
        server.stop()
        # the follower's stream ends with the sentence, so the phone reconnects and reads the state afresh
        with pytest.raises(Unavailable) as err:
            await asyncio.wait_for(anext(follower), 10)
        assert str(err.value).startswith(f"The class sessions are kept in Redis at 127.0.0.1:{server.port}, "
                                         "which does not answer; try again")
        await follower.aclose()
        t0 = time.monotonic()
        for call in (a.get(s.code), a.create(new_session()), a.put_guess(s.code, 1, "st", 1),
                     a.publish(s.code, {}), a.subscribe(s.code)):
            with pytest.raises(Unavailable):
                await call
        assert time.monotonic() - t0 < 10  # refused connections are answered at once, not after long retries
        # Redis back on the same port: the same store works again, and so do subscriptions
        server.start()
        assert await a.get(s.code) is None  # nothing was persisted
        await a.create(s)
        follower = await a.subscribe(s.code)
        await a.publish(s.code, {"back": True})
        assert await asyncio.wait_for(anext(follower), 2) == {"back": True}
        await follower.aclose()
        await a.close()

    try:
        run(main())
    finally:
        server.stop()


# ---------------------------------------------------------------- two server processes, one class

async def follow(client: httpx.AsyncClient, path: str, events: asyncio.Queue) -> None:
    """Read a session's Server-Sent Events into a queue as (name, data) (the first item is the response's status)."""
    async with client.stream("GET", path) as r:
        await events.put(r.status_code)
        name = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                await events.put((name, line[6:]))


async def next_event(events: asyncio.Queue, name: str, data: str | None = None) -> str:
    """The data of the next event of that name (and data, when given; others are skipped), within 10 s."""
    async def wait() -> str:
        while True:
            got, said = await events.get()
            if got == name and data in (None, said):
                return said

    return await asyncio.wait_for(wait(), 10)


def test_two_server_processes_serve_one_class(redis_server: RedisServer, tiny_checkpoint: Path) -> None:
    """The teacher works on process A, a phone joins, follows, and guesses on process B."""
    from bench.server import Server

    env = {"DEEPDIVE_REDIS_URL": redis_server.url, "DEEPDIVE_THREADS": "1"}
    with Server(tiny_checkpoint, env=env) as a, Server(tiny_checkpoint, env=env) as b:
        async def main() -> None:
            async with httpx.AsyncClient(base_url=a.url, timeout=10) as teacher, \
                    httpx.AsyncClient(base_url=b.url, timeout=10) as phone:
                r = await teacher.post("/class", data={"prompt": "Once upon a time"})
                assert r.status_code == 303, r.text
                code = teacher.cookies["deepdive_teacher"].split(".")[0]
                r = await phone.post("/join", data={"code": code.lower(), "nickname": "Ada"})
                assert r.status_code == 303 and r.headers["location"] == f"/class/{code}", r.text

                on_b, on_a = asyncio.Queue(), asyncio.Queue()
                readers = [asyncio.create_task(follow(phone, f"/class/{code}/events", on_b)),
                           asyncio.create_task(follow(teacher, f"/class/{code}/events", on_a))]
                try:
                    assert await on_b.get() == 200 and await on_a.get() == 200
                    assert await next_event(on_b, "students") == "1"
                    assert await next_event(on_b, "state") == "hello"
                    view = (await phone.get(f"/class/{code}/phone")).text
                    assert "Once" in view and "guess-text" not in view

                    r = await teacher.post(f"/class/{code}/round", data={"mode": "typed"})
                    assert r.status_code == 200, r.text
                    assert await next_event(on_b, "state", "round")  # published by A, heard on B
                    assert "Round 1" in (await phone.get(f"/class/{code}/phone")).text

                    r = await phone.post(f"/class/{code}/guess", data={"text": "there", "round": "1"})
                    assert r.status_code == 200, r.text
                    assert await next_event(on_a, "answers", "1")  # B's news on A

                    r = await teacher.post(f"/class/{code}/reveal")  # A reads the guess B stored
                    assert r.status_code == 200, r.text
                    assert await next_event(on_b, "state", "reveal")
                    revealed = (await phone.get(f"/class/{code}/phone")).text
                    assert 'class="class-result"' in revealed and "1 of 1 guesses" in revealed

                    csv = (await teacher.get(f"/class/{code}/rounds.csv")).text.splitlines()
                    assert len(csv) == 2 and csv[1].rstrip().endswith("there:1")

                    # the phone is no teacher, on either process; ending on A ends the stream on B
                    assert (await phone.post(f"/class/{code}/reveal")).status_code == 403
                    r = await teacher.post(f"/class/{code}/end")
                    assert r.status_code == 303
                    assert await next_event(on_b, "ended") == code
                    gone = await phone.get(f"/class/{code}/phone")  # the phone's view says so, on either process
                    assert gone.status_code == 200 and f"Class session {code} has ended" in gone.text
                finally:
                    for task in readers:
                        task.cancel()

        asyncio.run(main())


def test_a_server_whose_redis_is_away_answers_503(tiny_checkpoint: Path) -> None:
    """Each asker gets the sentence in the form it shows: the site's page, htmx a text/plain sentence, a phone's
    stream a "Reconnecting…" line, again each second while it stays open (a 200, or EventSource would give up for
    good); the stepper works without the panel."""
    from bench.server import Server

    port = free_port()  # nothing listens there
    down = f"Redis at 127.0.0.1:{port}, which does not answer; try again"
    with Server(tiny_checkpoint, env={"DEEPDIVE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                                      "DEEPDIVE_THREADS": "1"}) as server, \
            httpx.Client(base_url=server.url, timeout=20) as client:
        for method, path, data in [("POST", "/join", {"code": "ACDEFG"}), ("GET", "/class/ACDEFG", None),
                                   ("POST", "/class", {"prompt": "Once"})]:
            t0 = time.monotonic()
            r = client.request(method, path, data=data)
            assert r.status_code == 503 and r.headers["content-type"].startswith("text/html"), (path, r.text)
            assert down in r.text and "<nav" in r.text  # the site's page, not JSON
            assert time.monotonic() - t0 < 5  # short Redis timeouts: no 15 s waits
        r = client.post("/class/ACDEFG/round", headers={"HX-Request": "true"})
        expect_http_error(r, 503, re.escape(down))
        assert r.headers["content-type"].startswith("text/plain")
        with client.stream("GET", "/class/ACDEFG/events") as r:
            lines = r.iter_lines()
            said = [next(lines) for _ in range(6)]  # two messages, a second apart
        assert r.status_code == 200 and said[:2] == ["retry: 1000", "event: connection"] and said[4:] == said[:2]
        assert re.match(r'data: <p id="class-connection"[^>]*>Reconnecting… The class sessions are kept in Redis at',
                        said[2])
        # the teacher's projector: the stepper steps on, and the class panel says why it is missing
        client.cookies.set("deepdive_teacher", "ACDEFG.some-secret")
        page = client.get("/inference?prompt=Once")
        assert page.status_code == 200 and down in page.text and 'data-class-away="1"' in page.text
        r = client.post("/partials/inference", data={"prompt": "Once", "action": "greedy"})
        assert r.status_code == 200 and re.search(r'name="steps" value="g\d+t100"', r.text)
        assert client.get("/healthz").status_code == 200  # the rest of the site works on


def test_a_server_outlives_its_redis_going_away(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Followers' streams say the store is away and stay open rather than hang; once Redis is back, classes work
    again, and a stream whose session Redis lost says it ended."""
    from bench.server import Server

    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with Server(tiny_checkpoint, env={"DEEPDIVE_REDIS_URL": redis.url, "DEEPDIVE_THREADS": "1"}) as server:
            async def main() -> None:
                async with httpx.AsyncClient(base_url=server.url, timeout=20) as teacher:
                    assert (await teacher.post("/class", data={"prompt": "Once"})).status_code == 303
                    code = teacher.cookies["deepdive_teacher"].split(".")[0]
                    events = asyncio.Queue()
                    reader = asyncio.create_task(follow(teacher, f"/class/{code}/events", events))
                    assert await events.get() == 200 and await next_event(events, "state") == "hello"
                    redis.stop()
                    assert "Reconnecting… " in await next_event(events, "connection")  # the stream stays open
                    r = await teacher.post(f"/class/{code}/round", data={"mode": "typed"})
                    assert r.status_code == 503 and "which does not answer" in r.text  # the site's page

                    redis.start()  # empty: the session is gone, the stream says so, and a new one works
                    assert await next_event(events, "ended") == code
                    await asyncio.wait_for(reader, 10)
                    assert (await teacher.post(f"/class/{code}/round")).status_code == 404
                    assert (await teacher.post("/class", data={"prompt": "Once"})).status_code == 303
                    code = teacher.cookies["deepdive_teacher"].split(".")[0]
                    events = asyncio.Queue()
                    reader = asyncio.create_task(follow(teacher, f"/class/{code}/events", events))
                    assert await events.get() == 200 and await next_event(events, "state") == "hello"
                    assert (await teacher.post(f"/class/{code}/round", data={"mode": "typed"})).status_code == 200
                    assert await next_event(events, "state", "round")
                    reader.cancel()

            asyncio.run(main())
    finally:
        redis.stop()
