"""Class session bench: a class of phones follows a teacher while other students generate text.

Starts `python -m app` on 127.0.0.1 (the default model). A teacher starts a class session;
--phones simulated phones join it and follow its Server-Sent Events, as the phone page does;
--streams generation streams (driven as bench.load drives them) run from before the first
round to after the last, each started again after a pause of 0 to --think seconds, so they
come and go as a class's do (--think 0 starts them all in the same step, every time, the
worst case for anything waiting on the model). Then, --rounds times: the teacher
opens a round, every phone types a guess as soon as the round reaches it, and once every
guess is stored the teacher reveals. Each phone stamps the arrival of the view that shows the reveal (fetched on
the event, as the phone page does).

Reported: the time from the teacher's reveal request to each phone's view of the reveal,
p50 / p95 / max over every phone and round; the reveal request's own time; reveals that never
arrived; refused guesses; the generation streams' tokens/s and errors. The stamps are taken
by this process's event loop, which reads all the phones and streams at once, on the same
CPUs as the server: the figures include that client's own delay.

    .venv/bin/python -m bench.classroom [--phones 40] [--streams 40] [--rounds 10] [--think 1.0] [--redis-url URL]

Goal (from the issue): with 40 phones and 40 generation streams, reveal-to-every-phone
p95 ≤ 300 ms, every reveal received, zero errors.

Every client here is 127.0.0.1, so the server's per-address share of model requests is
switched off (DEEPDIVE_PER_CLIENT_REQUESTS=0), as in bench.load. With --redis-url the server
keeps the session in that Redis (DEEPDIVE_REDIS_URL) and the events go through its pub/sub.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field

import httpx

from bench import common as c
from bench.load import one_stream
from bench.server import Server

PROMPT = "Once upon a time, there was a little"
GUESSES = ["girl", "boy", "dog", "cat", "bird", "house", "tree", "friend", "fish", "the"]
GOAL_P95_MS = 300.0


@dataclass
class Class:
    """What the teacher and the phones share: the code, and per round the guesses stored and the reveal stamps."""
    url: str
    code: str
    phones: int
    joined: int = 0
    answered: dict[int, int] = field(default_factory=dict)  # round -> guesses answered, stored or refused
    refused: list[str] = field(default_factory=list)
    revealed: dict[int, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set on each count above

    def tell(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def until(self, done, timeout_s: float) -> bool:
        deadline = time.perf_counter() + timeout_s
        while not done():
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return False
        return True


async def guess(client: httpx.AsyncClient, room: Class, no: int, text: str) -> None:
    try:
        r = await client.post(f"/class/{room.code}/guess", data={"text": text, "round": str(no)})
        if r.status_code != 200:
            room.refused.append(f"HTTP {r.status_code}: {r.text[:120]}")
    except httpx.HTTPError as e:
        room.errors.append(f"guess: {type(e).__name__}: {e}")
    room.answered[no] = room.answered.get(no, 0) + 1
    room.tell()


async def phone(room: Class, i: int, timeout_s: float) -> None:
    """One phone: join, follow the events, guess when a round opens, stamp each reveal."""
    async with httpx.AsyncClient(base_url=room.url, timeout=httpx.Timeout(timeout_s, connect=10)) as client:
        guesses: set[str] = set()  # the rounds guessed, as the view shows their numbers
        sending: set[asyncio.Task] = set()
        try:
            r = await client.post("/join", data={"code": room.code, "nickname": f"phone {i}"})
            if r.status_code != 303:
                room.errors.append(f"join: HTTP {r.status_code}: {r.text[:120]}")
                return
            async with client.stream("GET", f"/class/{room.code}/events") as r:
                if r.status_code != 200:
                    room.errors.append(f"events: HTTP {r.status_code}")
                    return
                name, seen, stamped = "", "", set()
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    if not line.startswith("data: ") or name not in ("state", "ended"):
                        continue
                    if name == "ended":
                        return
                    if line == "data: hello":
                        room.joined += 1
                        room.tell()
                    # as the phone page does: its view again, a 204 while it is the one shown
                    view = await client.get(f"/class/{room.code}/phone", params={"seen": seen})
                    now = time.perf_counter()
                    if view.status_code != 200:
                        continue
                    seen = re.search(r'/phone\?seen=([\w-]+)"', view.text)[1]
                    if (shown := re.search(r'id="phone-result-h">Round (\d+):', view.text)) and shown[1] not in stamped:
                        stamped.add(shown[1])
                        room.revealed.setdefault(int(shown[1]), []).append(now)
                        room.tell()
                    elif (opened := re.search(r'name="round" value="(\d+)"', view.text)) and opened[1] not in guesses:
                        no = int(opened[1])
                        guesses.add(opened[1])
                        # not awaited here: the phone keeps reading its events while the guess is sent
                        task = asyncio.create_task(guess(client, room, no, GUESSES[(i + no) % len(GUESSES)]))
                        sending.add(task)
                        task.add_done_callback(sending.discard)
        except httpx.HTTPError as e:
            room.errors.append(f"phone {i}: {type(e).__name__}: {e}")
            room.tell()


async def streams(url: str, n: int, new: int, think_s: float, stop: asyncio.Event, timeout_s: float) -> dict:
    """n generation streams, each started again after a pause of 0 to think_s seconds, until stop is set."""
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    got = {"tokens": 0, "streams": 0, "errors": []}

    async def slot(client: httpx.AsyncClient, k: int) -> None:
        seed, rng = k * 10_000, random.Random(k)
        while not stop.is_set():
            # a student reads before generating again; with no pause, all the streams start in the same
            # step and end in the same step, and the server admits forty new ones at once every time
            await asyncio.sleep(rng.uniform(0, think_s))
            out = await one_stream(client, url, seed, new)
            seed += 1
            got["tokens"] += len(out["stamps"])
            got["streams"] += 1
            if out["error"]:
                got["errors"].append(out["error"])

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10), limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(slot(client, k) for k in range(n)))
        got["wall_s"] = time.perf_counter() - t0
    return got


async def run_class(url: str, args) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(args.timeout, connect=10)) as teacher:
        r = await teacher.post("/class", data={"prompt": PROMPT})
        if r.status_code != 303:
            raise RuntimeError(f"the class session did not start: HTTP {r.status_code}: {r.text[:200]}")
        room = Class(url, teacher.cookies["deepdive_teacher"].split(".")[0], args.phones)
        stop = asyncio.Event()
        generating = asyncio.create_task(streams(url, args.streams, args.new, args.think, stop, args.timeout))
        phones = [asyncio.create_task(phone(room, i, args.timeout)) for i in range(args.phones)]
        if not await room.until(lambda: room.joined >= args.phones, args.timeout):
            room.errors.append(f"only {room.joined} of {args.phones} phones joined")
        await asyncio.sleep(args.warmup)  # the generation streams get going before the first round

        latencies, requests, missing = [], [], 0
        for no in range(1, args.rounds + 1):
            r = await teacher.post(f"/class/{room.code}/round", data={"mode": "typed"})
            if r.status_code != 200:
                room.errors.append(f"round {no}: HTTP {r.status_code}: {r.text[:120]}")
                break
            if not await room.until(lambda no=no: room.answered.get(no, 0) >= room.joined, args.timeout):
                room.errors.append(f"round {no}: {room.answered.get(no, 0)} of {room.joined} guesses answered")
            await asyncio.sleep(args.pause)  # as in class: the count settles, then the teacher reveals
            t0 = time.perf_counter()
            r = await teacher.post(f"/class/{room.code}/reveal")
            requests.append(time.perf_counter() - t0)
            if r.status_code != 200:
                room.errors.append(f"reveal {no}: HTTP {r.status_code}: {r.text[:120]}")
                break
            await room.until(lambda no=no: len(room.revealed.get(no, [])) >= room.joined, args.timeout)
            got = [t - t0 for t in room.revealed.get(no, [])]
            missing += room.joined - len(got)
            latencies += got
            print(f"  round {no}: {len(got)} of {room.joined} phones, reveal → phone p95 "
                  f"{c.percentile(got, 95) * 1e3:.0f} ms, the request {requests[-1] * 1e3:.0f} ms", flush=True)

        await teacher.post(f"/class/{room.code}/end")
        stop.set()
        _, pending = await asyncio.wait(phones, timeout=10)
        for task in pending:
            task.cancel()
        gen = await generating
    return {
        "phones": args.phones, "joined": room.joined, "streams": args.streams, "rounds": len(requests),
        "reveals": len(latencies), "missing_reveals": missing,
        "reveal_p50_ms": c.median(latencies) * 1e3, "reveal_p95_ms": c.percentile(latencies, 95) * 1e3,
        "reveal_max_ms": max(latencies, default=float("nan")) * 1e3,
        "reveal_request_p50_ms": c.median(requests) * 1e3, "refused_guesses": len(room.refused),
        "refused_samples": room.refused[:3], "errors": len(room.errors) + len(gen["errors"]),
        "error_samples": (room.errors + gen["errors"])[:3], "generated_tokens": gen["tokens"],
        "generation_streams": gen["streams"], "tokens_per_s": gen["tokens"] / gen["wall_s"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = c.parser(__doc__.splitlines()[0])
    p.set_defaults(models="default")
    p.add_argument("--phones", type=int, default=40, help="students' phones following the class (default: %(default)s)")
    p.add_argument("--streams", type=int, default=40,
                   help="generation streams running meanwhile (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=10, help="guess rounds (default: %(default)s)")
    p.add_argument("--new", type=int, default=64, help="max_new_tokens per generation stream (default: %(default)s)")
    p.add_argument("--think", type=float, default=1.0,
                   help="each generation stream pauses 0 to this many seconds before starting again "
                        "(default: %(default)s)")
    p.add_argument("--pause", type=float, default=0.5,
                   help="seconds between the last guess and the reveal (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds the streams run before the first round (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60, help="seconds any one wait may take (default: %(default)s)")
    p.add_argument("--redis-url", default="", help="keep the session in this Redis (default: in the server's memory)")
    p.add_argument("--server-threads", type=int, default=None,
                   help="DEEPDIVE_THREADS for the server (default: unset, the app's own default)")
    args = p.parse_args(argv)
    if args.quick:
        args.phones, args.streams, args.rounds, args.new = 4, 2, 2, 4
        args.pause, args.warmup, args.think = 0.05, 0.2, 0.05
    facts = c.setup(args)
    env = {"DEEPDIVE_PER_CLIENT_REQUESTS": "0"}
    if args.redis_url:
        env["DEEPDIVE_REDIS_URL"] = args.redis_url
    store = f"Redis at {args.redis_url}" if args.redis_url else "the server's memory"
    results, rows = [], []
    for ref_model in c.model_refs(args):
        with Server(ref_model.path, threads=args.server_threads, env=env) as server:
            print(f"\n{ref_model.label} ({ref_model.note}): {args.phones} phones, {args.streams} generation "
                  f"streams, {args.rounds} rounds; sessions in {store}", flush=True)
            r = asyncio.run(run_class(server.url, args))
        r.update(model=ref_model.label, store="redis" if args.redis_url else "memory")
        results.append(r)
        met = "met" if r["reveal_p95_ms"] <= GOAL_P95_MS and not r["missing_reveals"] and not r["errors"] else "not met"
        rows.append([r["model"], r["store"], r["phones"], r["streams"], r["rounds"],
                     f"{r['reveals']} / {r['reveals'] + r['missing_reveals']}", f"{r['reveal_p50_ms']:.0f}",
                     f"{r['reveal_p95_ms']:.0f}", f"{r['reveal_max_ms']:.0f}", f"{r['reveal_request_p50_ms']:.0f}",
                     r["refused_guesses"], r["errors"], f"{r['tokens_per_s']:.0f}", met])
        if r["error_samples"] or r["refused_samples"]:
            print("  first problems:", *(r["error_samples"] + r["refused_samples"]), sep="\n    ")
    c.table(["model", "sessions in", "phones", "streams", "rounds", "reveals received", "reveal → phone p50 ms",
             "p95 ms", "max ms", "reveal request p50 ms", "refused guesses", "errors", "generation tok/s",
             f"goal p95 ≤ {GOAL_P95_MS:.0f} ms"], rows,
            title="Class session: the teacher's reveal reaching every phone, while other students generate")
    c.write_json(args.json, facts, results)
    return results


if __name__ == "__main__":
    main()
