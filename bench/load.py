"""Load test: many browsers generating at once, against a real server on 127.0.0.1.

For each model, starts `python -m app` (start-up time = launch to the first 200 from
/healthz), then for 1, 4, 16 and 40 concurrent streams posts /api/generate
(max_new_tokens 64, temperature 0.8, a distinct seed per stream) and reads the
Server-Sent Events, stamping each token's arrival. Reports aggregate tokens/s, the
gaps between a stream's tokens (p50 over all gaps; p95 per stream, the worst
stream's shown), time to first token, errors, and the server's resident memory at
idle and under the 40-stream load. Every run is bounded by --timeout seconds.

    .venv/bin/python -m bench.load [--models default,124m] [--streams 1,4,16,40]

Goals (from the issue): zero errors; with 40 streams, aggregate tokens/s ≥ 8x the
single-stream figure and every stream's p95 gap ≤ 3x the single-stream step time.
The single-stream figures are the 1-stream run's, through the same server.

All clients share 127.0.0.1, so the server's per-address cap on model requests is
switched off for the test (DEEPDIVE_PER_CLIENT_REQUESTS=0), as bench.soak does.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from bench import common as c
from bench.server import Server

PROMPT = "Once upon a time, there was a little"


async def one_stream(client: httpx.AsyncClient, url: str, seed: int, new: int) -> dict:
    body = {"prompt": PROMPT, "max_new_tokens": new, "temperature": 0.8, "seed": seed}
    out = {"t0": time.perf_counter(), "stamps": [], "error": None, "finish": None}
    try:
        async with client.stream("POST", f"{url}/api/generate", json=body) as r:
            if r.status_code != 200:
                out["error"] = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return out
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    if event == "token":
                        out["stamps"].append(time.perf_counter())
                elif line.startswith("data: ") and event == "done":
                    done = json.loads(line[6:])
                    out["finish"] = done["finish_reason"]
                    if done["finish_reason"] == "error":
                        out["error"] = done.get("message") or "finish_reason error"
    except httpx.HTTPError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    if out["finish"] is None and out["error"] is None:
        out["error"] = "the stream ended without a done event"
    return out


async def sample_memory(server: Server, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], server.rss_mib())
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass


async def run_streams(server: Server, n: int, new: int, timeout_s: float, seed0: int) -> dict:
    peak = [server.rss_mib()]
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10), limits=limits) as client:
        sampler = asyncio.create_task(sample_memory(server, peak, stop))
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(one_stream(client, server.url, seed0 + i, new)) for i in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        wall = time.perf_counter() - t0
        for t in pending:
            t.cancel()
        stop.set()
        await sampler
    streams = [t.result() for t in done]
    errors = [s["error"] for s in streams if s["error"]] + ["timed out"] * len(pending)
    tokens = sum(len(s["stamps"]) for s in streams)
    end = max((s["stamps"][-1] for s in streams if s["stamps"]), default=t0)
    gaps = [b - a for s in streams for a, b in zip(s["stamps"], s["stamps"][1:])]
    per_stream_p95 = [c.percentile([b - a for a, b in zip(s["stamps"], s["stamps"][1:])], 95)
                      for s in streams if len(s["stamps"]) > 1]
    return {
        "streams": n, "tokens": tokens, "errors": len(errors), "error_samples": errors[:3],
        "wall_s": wall, "tokens_per_s": tokens / (end - t0) if end > t0 else 0.0,
        "gap_p50_ms": c.median(gaps) * 1e3, "gap_p95_ms": c.percentile(gaps, 95) * 1e3,
        "worst_stream_gap_p95_ms": max(per_stream_p95, default=float("nan")) * 1e3,
        "ttft_p50_ms": c.median([s["stamps"][0] - s["t0"] for s in streams if s["stamps"]]) * 1e3,
        "ttft_max_ms": max((s["stamps"][0] - s["t0"] for s in streams if s["stamps"]), default=float("nan")) * 1e3,
        "eos_finishes": sum(s["finish"] == "eos" for s in streams),
        "peak_rss_mib": peak[0],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--streams", default="1,4,16,40", help="concurrent streams per run (default: %(default)s)")
    p.add_argument("--new", type=int, default=64, help="max_new_tokens per stream (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=180, help="seconds any one run may take (default: %(default)s)")
    p.add_argument("--server-threads", type=int, default=None,
                   help="DEEPDIVE_THREADS for the server (default: unset, the app's own default)")
    p.add_argument("--single-runs", type=int, default=3, help="1-stream runs, median taken (default: %(default)s)")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.streams.split(",")]
    if args.quick:
        counts, args.new, args.single_runs, args.timeout = [1, 4], 4, 1, 60
    facts = c.setup(args)
    results = []
    for ref_model in c.model_refs(args):
        # every client here is 127.0.0.1, while a classroom's browsers each have their own address:
        # the server's per-address share (4 model requests) is switched off for the test
        with Server(ref_model.path, threads=args.server_threads, env={"DEEPDIVE_PER_CLIENT_REQUESTS": "0"}) as server:
            idle = server.rss_mib()
            print(f"\n{ref_model.label} ({ref_model.note}): serving {server.startup_s:.2f} s after launch; "
                  f"resident memory at idle {idle:.0f} MiB; server torch threads: "
                  f"{args.server_threads or 'app default'}")
            runs = []
            seed = 0
            asyncio.run(run_streams(server, 1, 4, args.timeout, 10**6))  # warm-up: first-request costs
            for n in counts:
                reps = args.single_runs if n == 1 else 1
                got = []
                for _ in range(reps):
                    got.append(asyncio.run(run_streams(server, n, args.new, args.timeout, seed)))
                    seed += n
                got.sort(key=lambda r: r["tokens_per_s"])
                runs.append(got[len(got) // 2])  # the median run
                print(f"  {n} streams: {runs[-1]['tokens_per_s']:.1f} tok/s, {runs[-1]['errors']} errors", flush=True)
            after = server.rss_mib()
            single = next((r for r in runs if r["streams"] == 1), None)
            rows = []
            for r in runs:
                gain = r["tokens_per_s"] / single["tokens_per_s"] if single else float("nan")
                slow = r["worst_stream_gap_p95_ms"] / single["gap_p50_ms"] if single else float("nan")
                r.update(model=ref_model.label, startup_s=server.startup_s, idle_rss_mib=idle,
                         idle_rss_after_mib=after, aggregate_vs_single=gain, worst_p95_vs_single_step=slow)
                rows.append([r["streams"], r["tokens"], r["errors"], f"{r['tokens_per_s']:.0f}", c.ratio(gain),
                             f"{r['gap_p50_ms']:.1f}", f"{r['worst_stream_gap_p95_ms']:.1f}", c.ratio(slow),
                             f"{r['ttft_p50_ms']:.0f} / {r['ttft_max_ms']:.0f}", f"{r['peak_rss_mib']:.0f}"])
            results += runs
        c.table(["streams", "tokens", "errors", "aggregate tok/s", "vs 1 stream (goal ≥ 8× at 40)",
                 "gap p50 ms", "worst stream's gap p95 ms", "vs 1-stream step (goal ≤ 3×)",
                 "1st token p50 / max ms", "peak RSS MiB"], rows,
                title=f"Load test, {ref_model.label} model: {args.new} new tokens per stream, temperature 0.8; "
                      f"start-up {server.startup_s:.2f} s; RSS idle {idle:.0f} MiB, idle after {after:.0f} MiB")
    c.write_json(args.json, facts, results)
    return results


if __name__ == "__main__":
    main()
