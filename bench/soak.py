"""Soak: a classroom's mixed load for minutes, against a real server on 127.0.0.1.

40 clients (default) each loop until the time is up: tokenize (40%), next-token (25%),
activations (15%) or a streamed generation (20%; one in four is closed on purpose
after a few tokens, as a student leaving the page), with a pause of 0 to --think
seconds between requests, as a person reading the answer. Every request has a
timeout and the whole run a hard deadline, so the soak is bounded in count and time.

Reports: 5xx answers, other failures (transport errors, 4xx), streams dropped other
than on purpose, 503 answers, latency per kind (p50/p95), and the server's
resident memory after warm-up (the first --warmup seconds) and at the end of the load
(both sampled under load), then idle after it.

    .venv/bin/python -m bench.soak [--duration 300] [--clients 40] [--model DIR]

Goals (from the issue): zero 5xx, zero dropped streams, tokenize p95 ≤ 50 ms under
load, memory at the end within 10% of its value after warm-up.

All clients come from 127.0.0.1, so the server's per-client share is switched off
(DEEPDIVE_PER_CLIENT_REQUESTS=0); in a classroom each student's computer has its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter, defaultdict

import httpx

from bench import common as c
from bench.server import Server

TEXTS = ["Once upon a time, there was a little", "The cat sat on the mat because", "Hello wörld! 🦜 <b>hi</b>",
         "Tom and Lily went to the park. They saw a big", "   ", "e\u0301 שלום 👩\u200d👩\u200d👧 <|endoftext|>"]
KINDS = [("tokenize", 40), ("next-token", 25), ("activations", 15), ("generate", 20)]


class Tally:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: Counter[int] = Counter()
        self.failures: list[str] = []  # transport errors and 4xx: none are expected
        self.dropped: list[str] = []   # streams that ended without their done event, not on purpose
        self.cancelled = 0
        self.streams = 0


async def one_request(client: httpx.AsyncClient, kind: str, rng: random.Random, tally: Tally) -> None:
    text = rng.choice(TEXTS)
    t0 = time.perf_counter()
    if kind == "generate":
        return await one_stream(client, text, rng, tally)
    path, body = {
        "tokenize": ("/api/tokenize", {"text": text * rng.randint(1, 20)}),
        "next-token": ("/api/next-token", {"text": text, "n": 20, "temperature": 0.8, "top_k": 40}),
        "activations": ("/api/activations", {"text": text, "attention": [{"layer": 0}], "neurons": 3,
                                             "logit_lens": 3}),
    }[kind]
    r = await client.post(path, json=body)
    await r.aread()
    tally.status[r.status_code] += 1
    if r.status_code == 200:
        tally.latency[kind].append(time.perf_counter() - t0)
    elif r.status_code != 503:
        tally.failures.append(f"{kind}: HTTP {r.status_code} {r.text[:120]!r}")


async def one_stream(client: httpx.AsyncClient, text: str, rng: random.Random, tally: Tally) -> None:
    leave_after = rng.randint(1, 5) if rng.random() < 0.25 else None
    body = {"prompt": text, "max_new_tokens": rng.choice([16, 32, 64]), "temperature": 0.8,
            "seed": rng.randrange(2**31)}
    t0, tokens, done = time.perf_counter(), 0, False
    async with client.stream("POST", "/api/generate", json=body) as r:
        tally.status[r.status_code] += 1
        if r.status_code != 200:
            await r.aread()
            if r.status_code != 503:
                tally.failures.append(f"generate: HTTP {r.status_code} {r.text[:120]!r}")
            return
        tally.streams += 1
        event = None
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                tokens += event == "token"
                if leave_after and tokens >= leave_after:
                    tally.cancelled += 1
                    return  # leaving the block closes the connection mid-stream
            elif line.startswith("data: ") and event == "done":
                done = True
                finish = json.loads(line[6:])
                if finish["finish_reason"] == "error":
                    tally.dropped.append(f"error: {finish.get('message')}")
    if not done:
        tally.dropped.append(f"no done event after {tokens} tokens")
    else:
        tally.latency["generate"].append(time.perf_counter() - t0)


async def client_loop(n: int, url: str, until: float, think: float, tally: Tally, timeout: float) -> None:
    rng = random.Random(n)
    kinds, weights = zip(*KINDS)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout, connect=10)) as client:
        await asyncio.sleep(rng.uniform(0, think))  # the room does not click in step
        while time.perf_counter() < until:
            kind = rng.choices(kinds, weights)[0]
            try:
                await one_request(client, kind, rng, tally)
            except httpx.HTTPError as e:
                target = tally.dropped if kind == "generate" else tally.failures
                target.append(f"{kind}: {type(e).__name__}: {e}")
            await asyncio.sleep(rng.uniform(0, think))


async def soak(server: Server, clients: int, duration: float, warmup: float, think: float, timeout: float) -> dict:
    tally = Tally()
    t0 = time.perf_counter()
    until = t0 + duration
    tasks = [asyncio.create_task(client_loop(i, server.url, until, think, tally, timeout)) for i in range(clients)]
    await asyncio.sleep(min(warmup, duration))
    warm_tally_tokenize = len(tally.latency["tokenize"])  # latency counts from here: warm-up excluded
    rss_warm = server.rss_mib()
    rss_samples = [rss_warm]
    while time.perf_counter() < until:
        await asyncio.sleep(min(5.0, max(0.0, until - time.perf_counter())))
        rss_samples.append(server.rss_mib())
    done, pending = await asyncio.wait(tasks, timeout=timeout + 10)  # the hard bound: one request's timeout
    for t in pending:
        t.cancel()
    for t in done:
        if t.exception():
            tally.failures.append(f"client crashed: {t.exception()!r}")
    rss_end = rss_samples[-1]  # the last sample under load: the like of the warm-up one
    await asyncio.sleep(2)  # let the server finish the cancelled streams' last step
    rss_idle = server.rss_mib()
    tok = tally.latency["tokenize"][warm_tally_tokenize:]
    return {
        "duration_s": duration, "clients": clients, "think_s": think,
        "requests": sum(tally.status.values()), "status": dict(sorted(tally.status.items())),
        "http_5xx": sum(n for s, n in tally.status.items() if s >= 500),
        "busy_503": tally.status.get(503, 0),
        "failures": len(tally.failures), "failure_samples": tally.failures[:5],
        "streams": tally.streams, "cancelled_on_purpose": tally.cancelled,
        "dropped_streams": len(tally.dropped), "dropped_samples": tally.dropped[:5],
        "latency_ms": {k: {"n": len(v), "p50": c.median(v) * 1e3, "p95": c.percentile(v, 95) * 1e3}
                       for k, v in sorted(tally.latency.items())},
        "tokenize_p95_after_warmup_ms": c.percentile(tok, 95) * 1e3,
        "rss_after_warmup_mib": rss_warm, "rss_end_mib": rss_end, "rss_idle_after_mib": rss_idle,
        "rss_peak_sampled_mib": max(rss_samples),
        "rss_change": rss_end / rss_warm - 1 if rss_warm == rss_warm else float("nan"),
        "unfinished_clients": len(pending),
    }


def main(argv: list[str] | None = None) -> dict:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=300, help="seconds of load (default: %(default)s)")
    p.add_argument("--clients", type=int, default=40, help="concurrent clients (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=30, help="seconds before memory and latency count "
                                                              "(default: %(default)s)")
    p.add_argument("--think", type=float, default=1.0, help="most seconds a client pauses between requests "
                                                             "(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60, help="seconds one request may take (default: %(default)s)")
    p.add_argument("--server-threads", type=int, default=None, help="DEEPDIVE_THREADS for the server")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.clients, args.warmup = 10, 4, 2
    facts = c.setup(args)
    args.models = "tiny" if args.quick else "default"  # one model: the default, or a random one of its shape
    ref = c.model_refs(args)[0]
    os.environ["DEEPDIVE_PER_CLIENT_REQUESTS"] = "0"  # every client here is 127.0.0.1
    with Server(ref.path, threads=args.server_threads) as server:
        print(f"\nsoak: {args.clients} clients for {args.duration:.0f} s against {ref.label} ({ref.note}); "
              f"warm-up {args.warmup:.0f} s; pauses 0-{args.think:g} s", flush=True)
        r = asyncio.run(soak(server, args.clients, args.duration, args.warmup, args.think, args.timeout))
        r["model"] = f"{ref.label} ({ref.note})"
    rows = [[k, v["n"], f"{v['p50']:.1f}", f"{v['p95']:.1f}"] for k, v in r["latency_ms"].items()]
    c.table(["kind", "answers", "p50 ms", "p95 ms"], rows,
            title=f"Soak: {r['clients']} clients, {r['duration_s']:.0f} s, {r['model']}")
    goal = lambda ok: "ok" if ok else "MISSED"  # noqa: E731
    c.table(["figure", "value", "goal"], [
        ["requests", r["requests"], ""],
        ["5xx (503 busy included)", r["http_5xx"], goal(r["http_5xx"] == 0)],
        ["503 busy", f"{r['busy_503']}", ""],
        ["other failures", r["failures"], goal(r["failures"] == 0)],
        ["streams / closed on purpose", f"{r['streams']} / {r['cancelled_on_purpose']}", ""],
        ["dropped streams", r["dropped_streams"], goal(r["dropped_streams"] == 0)],
        ["tokenize p95 after warm-up, ms", f"{r['tokenize_p95_after_warmup_ms']:.1f}",
         goal(r["tokenize_p95_after_warmup_ms"] <= 50)],
        ["RSS after warm-up / at the end of the load, MiB", f"{r['rss_after_warmup_mib']:.0f} / "
         f"{r['rss_end_mib']:.0f} ({r['rss_change']:+.1%})", goal(abs(r["rss_change"]) <= 0.10)],
        ["RSS peak sampled / idle after, MiB", f"{r['rss_peak_sampled_mib']:.0f} / {r['rss_idle_after_mib']:.0f}", ""],
    ], title="Soak goals")
    for sample in r["failure_samples"] + r["dropped_samples"]:
        print("  ", sample)
    c.write_json(args.json, facts, r)
    return r


if __name__ == "__main__":
    main()
