"""Two checkouts A/B through real servers: both serve the same weights at once and the requests alternate
between them, so that whatever else the machine is doing falls on both alike.

    git worktree add /tmp/before <commit>
    .venv/bin/python -m bench.ab --before /tmp/before [--rounds 30] activations [--kind main|attention] [--no-gzip]
    .venv/bin/python -m bench.ab --before /tmp/before --rounds 6 load [--streams 1,16,40]

activations: /api/activations at --tokens tokens, one request to each server per round (the order alternates),
  wall time per request and the server's CPU time per request (user + system, from /proc). On a shared
  machine the wall time swings with other processes; the CPU time says whether a server does more work.
load: bench.load's concurrent streams, each count run on both servers per round: aggregate tokens/s and the
  server's CPU time per token.
The medians over the rounds are printed with the load average. The checkout being run is "after".
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx

from bench import common as c
from bench.activations import REQUESTS, prompt_ids
from bench.load import run_streams
from bench.server import Server

KINDS = {"main": "main (norms, lens 3, neurons 5)", "attention": "attention (1 block, all heads)"}


def cpu_s(server: Server) -> float:
    """The server's CPU time so far (user + system), in seconds."""
    with open(f"/proc/{server.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alternate(rnd: int, servers: dict[str, Server]) -> list[str]:
    return list(servers) if rnd % 2 == 0 else list(servers)[::-1]


def activations(servers: dict[str, Server], args) -> list[dict]:
    headers = {"accept-encoding": "identity" if args.no_gzip else "gzip, deflate"}
    body = {"ids": prompt_ids(args.tokens, 50257), **REQUESTS[KINDS[args.kind]]}
    wall: dict[str, list[float]] = {k: [] for k in servers}
    cpu: dict[str, list[float]] = {k: [] for k in servers}
    with httpx.Client(timeout=120, headers=headers) as client:
        for server in servers.values():  # warm-up
            client.post(f"{server.url}/api/activations", json=body).raise_for_status()
        for rnd in range(args.rounds):
            for k in alternate(rnd, servers):
                c0, t0 = cpu_s(servers[k]), time.perf_counter()
                client.post(f"{servers[k].url}/api/activations", json=body).raise_for_status()
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(cpu_s(servers[k]) - c0)
    rows = [[k, c.ms(c.median(wall[k])), c.ms(c.percentile(wall[k], 25)), c.ms(c.percentile(wall[k], 75)),
             c.ms(c.median(cpu[k]))] for k in servers]
    c.table(["server", "p50 ms", "p25 ms", "p75 ms", "server CPU ms per request"], rows,
            title=f"/api/activations '{args.kind}', {args.tokens} tokens, gzip {'off' if args.no_gzip else 'on'}, "
                  f"{args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    return [{"server": k, "p50_ms": c.median(wall[k]) * 1e3, "cpu_ms": c.median(cpu[k]) * 1e3} for k in servers]


def load(servers: dict[str, Server], args) -> list[dict]:
    counts = [int(x) for x in args.streams.split(",")]
    runs: dict[tuple[int, str], list[dict]] = {(n, k): [] for n in counts for k in servers}
    for server in servers.values():
        asyncio.run(run_streams(server, 1, 4, 120, 10**6))  # warm-up
    seed = 0
    for rnd in range(args.rounds):
        for n in counts:
            for k in alternate(rnd + n, servers):
                c0 = cpu_s(servers[k])
                r = asyncio.run(run_streams(servers[k], n, 64, 180, seed))
                r["cpu_ms_per_token"] = (cpu_s(servers[k]) - c0) * 1e3 / max(r["tokens"], 1)
                runs[(n, k)].append(r)
            seed += n
    rows, results = [], []
    for (n, k), rs in runs.items():
        def med(key: str) -> float:
            return c.median([r[key] for r in rs])
        rows.append([n, k, sum(r["errors"] for r in rs), f"{med('tokens_per_s'):.0f}", f"{med('gap_p50_ms'):.1f}",
                     f"{med('ttft_p50_ms'):.0f}", f"{med('cpu_ms_per_token'):.2f}"])
        results.append({"streams": n, "server": k, "tokens_per_s": med("tokens_per_s"),
                        "cpu_ms_per_token": med("cpu_ms_per_token")})
    c.table(["streams", "server", "errors", "aggregate tok/s", "gap p50 ms", "1st token p50 ms",
             "server CPU ms per token"], rows,
            title=f"bench.load A/B, 64 new tokens per stream, {args.rounds} rounds; "
                  f"load average {os.getloadavg()[0]:.1f}")
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--before", required=True, type=Path, help="the other checkout (a worktree of the older commit)")
    p.add_argument("--rounds", type=int, default=30, help="rounds (default: %(default)s)")
    p.add_argument("--server-threads", type=int, default=2, help="DEEPDIVE_THREADS for both servers")
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("activations")
    a.add_argument("--kind", choices=list(KINDS), default="main")
    a.add_argument("--tokens", type=int, default=256)
    a.add_argument("--no-gzip", action="store_true", help="ask for answers as they are (no accept-encoding: gzip)")
    lo = sub.add_parser("load")
    lo.add_argument("--streams", default="1,16,40")
    args = p.parse_args(argv)
    args.wait_quiet = 0  # interleaving is what makes a busy machine fair to both
    if args.quick:
        args.rounds, args.tokens, args.streams = 2, 16, "1"
    facts = c.setup(args)
    model = c.model_refs(args)[0].path  # the first of --models: the shipped model unless told otherwise
    # the streams all come from 127.0.0.1: the per-address share is off for them, as in bench.load (the
    # activations requests keep it, so the route's ModelTurn dependency is measured too)
    env = {"DEEPDIVE_PER_CLIENT_REQUESTS": "0"} if args.what == "load" else {}
    servers: dict[str, Server] = {}
    try:
        for name, root in (("before", args.before.resolve()), ("after", c.ROOT)):
            servers[name] = Server(model, threads=args.server_threads, env=env, root=root)
            servers[name].start()
        results = (activations if args.what == "activations" else load)(servers, args)
    finally:
        for server in servers.values():
            server.stop()
    c.write_json(args.json, facts, results)
    return results


if __name__ == "__main__":
    main()
