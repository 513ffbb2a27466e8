"""/api/tokenize latency and response size for 1 KB and 100 KB of text, through a real server.

The text is English prose from model/samples (TinyStories). The floor column is the same
work in process (the engine's tokenize, without HTTP or JSON), so the ratio is what the
endpoint adds on top of the tokenizer.

    .venv/bin/python -m bench.tokenize [--model PATH] [--repeat 30]
"""

from __future__ import annotations

import time

import httpx

from bench import common as c
from bench.server import Server

SAMPLE = c.ROOT / "model" / "samples" / "tinystories_train.txt"
SIZES = {"1 KB": 1_000, "100 KB": 100_000}


def text_of(n: int) -> str:
    base = SAMPLE.read_text(encoding="utf-8")
    text = (base * (n // len(base) + 1))[:n]
    return text.encode("ascii", errors="replace").decode()[:n]  # n characters = n bytes


def main(argv: list[str] | None = None) -> list[dict]:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=30, help="requests per size (default: %(default)s)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat = 2
    facts = c.setup(args)
    ref_model = c.model_refs(args)[0]  # the tokenizer does not depend on the model: one server is enough

    from app.config import Settings
    from app.serving.engine import Engine
    from model.loading import load_model

    engine = Engine(load_model(ref_model.path), Settings())  # for the in-process floor only
    rows, results = [], []
    with Server(ref_model.path) as server, httpx.Client(timeout=60) as client:
        for label, n in SIZES.items():
            text = text_of(n)
            r = client.post(f"{server.url}/api/tokenize", json={"text": text})
            r.raise_for_status()
            size, tokens = len(r.content), r.json()["counts"]["tokens"]
            times, floor = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                client.post(f"{server.url}/api/tokenize", json={"text": text}).raise_for_status()
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                engine._tokenize(text).model_dump_json()
                floor.append(time.perf_counter() - t0)
            p50, p95, f50 = c.median(times), c.percentile(times, 95), c.median(floor)
            results.append({"text": label, "characters": n, "tokens": tokens, "p50_ms": p50 * 1e3,
                            "p95_ms": p95 * 1e3, "in_process_ms": f50 * 1e3, "response_bytes": size})
            rows.append([label, tokens, c.ms(p50), c.ms(p95), f"{size / 1024:.1f}", c.ms(f50), c.ratio(p50 / f50)])
    c.table(["text", "tokens", "p50 ms", "p95 ms", "response KiB", "in-process tokenize + JSON ms",
             "endpoint / in-process"], rows,
            title=f"/api/tokenize through the server ({args.repeat} sequential requests each)")
    c.write_json(args.json, facts, results)
    return results


if __name__ == "__main__":
    main()
