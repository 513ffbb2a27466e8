"""Class sessions in Redis, so several server processes behind one address serve one class.

The keys, for a session with code C (the contract is app/classroom/store.py's):

    class:C               the session as JSON (Session.to_json), expiring ttl_s after the last write
    class:C:students      hash: student id -> Student as JSON
    class:C:rounds        set of the round numbers that have guesses
    class:C:round:N       hash: student id -> token id, the latest guess counts
    class:C:events        pub/sub channel of the session's events
    class:C:fate          "ended" for ttl_s after the teacher ended the session
    classes:live          sorted set: code -> when it expires (ms, Redis's clock): the session bound, and
                          for ttl_s after, the sign that a session expired rather than was lost

Every check-then-write (a free code, room for one more session or student, a session still
alive) runs as one Lua script, so two processes never both take the last place. Each process
holds one pub/sub connection for all its followers: a session's channel is subscribed once,
and each message is parsed once and handed to every local follower's queue. If Redis goes
away, every call raises Unavailable (a sentence: pages show it in place, app/classroom/routes.py)
and every follower's stream says so and tries again each second (app/classroom/event_routes.py), reading the
state afresh once Redis answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.classroom.state import Session, Student, student_from_json
from app.classroom.store.base import QUEUE_EVENTS, CodeTaken, Events, Gone, Store, StoreFull, Unavailable

LIVE = "classes:live"
GONE = "This class session has ended or expired; ask the teacher for the new code."

# ---- Lua: each script is one atomic step on the server; KEYS are session, students, rounds, live

_TOUCH = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function touch(code, ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
  for _, n in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    redis.call('PEXPIRE', KEYS[1] .. ':round:' .. n, ttl)
  end
  redis.call('ZADD', KEYS[4], now_ms() + tonumber(ttl), code)
end
local function clear()
  for _, n in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    redis.call('DEL', KEYS[1] .. ':round:' .. n)
  end
  redis.call('DEL', KEYS[2], KEYS[3])
end
"""

# KEYS: live only; the sessions whose time has not run out, by the Redis server's clock
RUNNING = _TOUCH + """
return redis.call('ZCOUNT', KEYS[1], now_ms(), '+inf')
"""

# ARGV: session JSON, ttl ms, max sessions, code
CREATE = _TOUCH + """
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[2]))  -- kept a while: "expired", not "lost"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'taken' end
if redis.call('ZCOUNT', KEYS[4], now, '+inf') >= tonumber(ARGV[3]) then return 'full' end
clear()  -- an expired session of the same code may have left students or guesses a moment longer
redis.call('DEL', KEYS[1] .. ':fate')
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
touch(ARGV[4], ARGV[2])
return 'ok'
"""

# ARGV: session JSON, ttl ms, code
SAVE = _TOUCH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
touch(ARGV[3], ARGV[2])
return 1
"""

# ARGV: code, ttl ms
DELETE = _TOUCH + """
clear()
if redis.call('DEL', KEYS[1]) == 1 then redis.call('SET', KEYS[1] .. ':fate', 'ended', 'PX', ARGV[2]) end
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""

# ARGV: student id, nickname as a JSON string, joined as a JSON number, ttl ms, max students, code.
# A reconnect with no nickname keeps the one it had; the value is built here so `joined` keeps
# every digit (cjson would round it to 14).
ADD_STUDENT = _TOUCH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then return {'full'} end
local nickname = ARGV[2]
if nickname == '""' and old then nickname = cjson.encode(cjson.decode(old).nickname) end
local value = '{"nickname": ' .. nickname .. ', "joined": ' .. ARGV[3] .. '}'
redis.call('HSET', KEYS[2], ARGV[1], value)
touch(ARGV[6], ARGV[4])
return {'ok', value}
"""

# KEYS: students; ARGV: student id, unless_joined_after ('' for none)
REMOVE_STUDENT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
if ARGV[2] ~= '' and cjson.decode(old).joined > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

# ARGV: round number, student id, token id, ttl ms, code
PUT_GUESS = _TOUCH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1] .. ':round:' .. ARGV[1], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
touch(ARGV[5], ARGV[4])
return 1
"""


def session_key(code: str) -> str:
    return f"class:{code}"


def channel(code: str) -> str:
    return f"class:{code}:events"


def where(url: str) -> str:
    """The Redis address without any password, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}" if parts.scheme != "unix" else parts.path


class RedisStore(Store):
    """Sessions in Redis, shared by every server process that points at the same DEEPDIVE_REDIS_URL."""

    def __init__(self, url: str, ttl_s: float, max_sessions: int, max_students: int, timeout_s: float = 1.0,
                 retries: int = 1):
        super().__init__(ttl_s, max_sessions, max_students)
        # short timeouts and few retries (DEEPDIVE_REDIS_TIMEOUT_S, DEEPDIVE_REDIS_RETRIES): while Redis is away
        # or frozen, a click waits about timeout_s × (retries + 1), not the client's default of many seconds
        self.redis = Redis.from_url(url, decode_responses=True, socket_connect_timeout=timeout_s,
                                    socket_timeout=timeout_s, socket_keepalive=True,
                                    retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries))
        self.down = (f"The class sessions are kept in Redis at {where(url)}, which does not answer; try again in "
                     "a moment, and if it persists, whoever runs the server should check that Redis is running.")
        self.ttl_ms = max(1, int(self.ttl_s * 1000))
        self._create = self.redis.register_script(CREATE)
        self._save = self.redis.register_script(SAVE)
        self._delete = self.redis.register_script(DELETE)
        self._running = self.redis.register_script(RUNNING)
        self._add_student = self.redis.register_script(ADD_STUDENT)
        self._remove_student = self.redis.register_script(REMOVE_STUDENT)
        self._put_guess = self.redis.register_script(PUT_GUESS)
        self.fanout = Fanout(self.redis, self.down, timeout_s * (retries + 1))

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Redis's failures as Unavailable, whose sentence says what happened and what to do."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as err:
            raise Unavailable(self.down) from err
        except RedisError as err:
            raise Unavailable(f"Redis, where the class sessions are kept, refused a request ({err}); try again "
                              "in a moment, and if it persists, whoever runs the server should read its log.") from err

    @staticmethod
    def keys(code: str) -> list[str]:
        key = session_key(code)
        return [key, f"{key}:students", f"{key}:rounds", LIVE]

    async def create(self, session: Session) -> None:
        session.active = time.time()
        with self.answering():
            got = await self._create(keys=self.keys(session.code),
                                     args=[session.to_json(), self.ttl_ms, self.max_sessions, session.code])
        if got == "taken":
            raise CodeTaken(f"The code {session.code} is in use.")
        if got == "full":
            raise StoreFull(self.full_message())

    async def get(self, code: str) -> Session | None:
        key = session_key(code)
        with self.answering():
            async with self.redis.pipeline(transaction=True) as pipe:
                text, students = await pipe.get(key).hgetall(f"{key}:students").execute()
        if text is None:
            return None
        return Session.from_json(text, {sid: student_from_json(s) for sid, s in students.items()})

    async def save(self, session: Session) -> bool:
        session.active = time.time()
        with self.answering():
            return bool(await self._save(keys=self.keys(session.code),
                                         args=[session.to_json(), self.ttl_ms, session.code]))

    async def delete(self, code: str) -> None:
        with self.answering():
            await self._delete(keys=self.keys(code), args=[code, self.ttl_ms])

    async def running(self) -> int:
        with self.answering():
            return int(await self._running(keys=[LIVE]))

    async def fate(self, code: str) -> str | None:
        key = session_key(code)
        with self.answering():
            async with self.redis.pipeline(transaction=True) as pipe:
                live, fate, expires = await pipe.exists(key).get(f"{key}:fate").zscore(LIVE, code).execute()
        if live:
            return None
        if fate:
            return "ended"
        return "expired" if expires is not None else None

    async def add_student(self, code: str, student_id: str, nickname: str, now: float | None = None) -> Student:
        joined = json.dumps(float(now or time.time()))
        with self.answering():
            got = await self._add_student(keys=self.keys(code), args=[
                student_id, json.dumps(nickname, ensure_ascii=False), joined, self.ttl_ms, self.max_students, code])
        if got[0] == "gone":
            raise Gone(GONE)
        if got[0] == "full":
            raise StoreFull(self.crowded_message())
        return student_from_json(got[1])

    async def remove_student(self, code: str, student_id: str, unless_joined_after: float | None = None) -> bool:
        after = "" if unless_joined_after is None else json.dumps(float(unless_joined_after))
        with self.answering():
            return bool(await self._remove_student(keys=[f"{session_key(code)}:students"],
                                                   args=[student_id, after]))

    async def put_guess(self, code: str, round_no: int, student_id: str, token_id: int) -> None:
        with self.answering():
            ok = await self._put_guess(keys=self.keys(code),
                                       args=[int(round_no), student_id, int(token_id), self.ttl_ms, code])
        if not ok:
            raise Gone(GONE)

    async def guesses(self, code: str, round_no: int) -> dict[str, int]:
        with self.answering():
            got = await self.redis.hgetall(f"{session_key(code)}:round:{int(round_no)}")
        return {sid: int(token) for sid, token in got.items()}

    async def publish(self, code: str, event: dict) -> None:
        with self.answering():
            await self.redis.publish(channel(code), json.dumps(event, ensure_ascii=False))

    async def subscribe(self, code: str) -> Events:
        name = channel(code)
        with self.answering():
            queue = await self.fanout.add(name)
        return RedisEvents(self.fanout, name, queue)

    async def close(self) -> None:
        await self.fanout.close()
        await self.redis.aclose()


class RedisEvents(Events):
    """A subscription of the Redis store: what the process's pub/sub connection hands this follower."""

    def __init__(self, fanout: Fanout, name: str, queue: asyncio.Queue):
        self.fanout = fanout
        self.name = name
        self.queue = queue

    async def __anext__(self) -> dict:
        item = await self.queue.get()
        if isinstance(item, Unavailable):
            raise item
        return item

    async def aclose(self) -> None:
        await self.fanout.remove(self.name, self.queue)


class Fanout:
    """One pub/sub connection for the whole process: each channel is subscribed once, and each of its
    messages goes to every local follower's queue. A follower that falls QUEUE_EVENTS behind loses
    its oldest events, never the reader its pace."""

    def __init__(self, redis: Redis, down: str, subscribe_timeout_s: float):
        self.redis = redis
        self.down = down
        self.subscribe_timeout_s = subscribe_timeout_s
        self.pubsub: PubSub | None = None
        self.reader: asyncio.Task | None = None
        self.queues: dict[str, set[asyncio.Queue]] = {}
        self.confirming: dict[str, asyncio.Future] = {}
        self.lock = asyncio.Lock()

    async def add(self, name: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_EVENTS)
        async with self.lock:
            if name in self.queues:
                self.queues[name].add(queue)
                return queue
            if self.pubsub is None:
                self.pubsub = self.redis.pubsub()
            self.queues[name] = {queue}
            confirmed = asyncio.get_running_loop().create_future()
            self.confirming[name] = confirmed
            try:
                await self.pubsub.subscribe(name)
                if self.reader is None:
                    self.reader = asyncio.create_task(self.read(self.pubsub))
                # the events published after this returns reach the queue: Redis has the subscription
                await asyncio.wait_for(asyncio.shield(confirmed), self.subscribe_timeout_s)
            except BaseException as err:
                self.confirming.pop(name, None)
                self.queues.pop(name, None)
                if isinstance(err, TimeoutError):
                    raise Unavailable(self.down) from None
                raise
        return queue

    async def remove(self, name: str, queue: asyncio.Queue) -> None:
        async with self.lock:
            queues = self.queues.get(name)
            if queues is None or queue not in queues:
                return
            queues.discard(queue)
            if queues:
                return
            del self.queues[name]
            try:
                await self.pubsub.unsubscribe(name)
            except (RedisError, OSError):
                await self.fail(Unavailable(self.down))

    async def read(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind, name = message["type"], message["channel"]
                if kind == "subscribe":
                    confirmed = self.confirming.pop(name, None)
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(None)
                elif kind == "message":
                    try:
                        event = json.loads(message["data"])
                    except ValueError:  # not this app's: the channel is open to anyone with access to Redis
                        continue
                    for queue in self.queues.get(name, ()):
                        put_latest(queue, event)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError):
            if self.pubsub is pubsub:
                self.reader = None  # this task is ending: fail() must not cancel it
                await self.fail(Unavailable(self.down))

    async def fail(self, error: Unavailable) -> None:
        """Redis went away: end every follower's stream and drop the connection; the next subscribe opens a new one."""
        for confirmed in self.confirming.values():
            if not confirmed.done():
                confirmed.set_exception(error)
        self.confirming.clear()
        for queues in self.queues.values():
            for queue in queues:
                while not queue.empty():  # the error goes first: the state is read afresh on reconnecting
                    queue.get_nowait()
                queue.put_nowait(error)
        self.queues.clear()
        await self.drop()

    async def drop(self) -> None:
        reader, pubsub = self.reader, self.pubsub
        self.reader = self.pubsub = None
        if reader is not None:
            reader.cancel()
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except (RedisError, OSError):
                pass

    async def close(self) -> None:
        async with self.lock:
            self.queues.clear()
            await self.drop()


def put_latest(queue: asyncio.Queue, event: dict) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(event)
