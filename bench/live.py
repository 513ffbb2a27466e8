"""Live training through a real server: how fast the tiny model learns the children's stories sample, and what a
running job does to the pages' latency.

One run of --minutes on the built-in stories (the Training page's defaults, in the job's own process with one
torch thread). Before it, during it and after it, the same requests time the Training page (GET /loss, which
scores its text) and a step of the Inference stepper (GET /inference, the next-token distribution): the ratio of
their medians during / idle is what a class feels while a model trains. The run's own figures come from
/api/training/live: validation loss at each minute, bytes per second, and the step-500 sample with the share of
its words that are words of the training text.

    .venv/bin/python -m bench.live [--minutes 3] [--repeat 20]
"""

from __future__ import annotations

import re
import time

import httpx

from bench import common as c
from bench.server import Server

SAMPLE = c.ROOT / "model" / "samples" / "tinystories_train.txt"
REQUESTS = {"Training page (GET /loss)": "/loss", "stepper (GET /inference)": "/inference?prompt=Once%20upon%20a"}


def timed(client: httpx.Client, url: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        client.get(url).raise_for_status()
        times.append(time.perf_counter() - t0)
    return times


def job_peak_mib(server_pid: int) -> float:
    """The most resident memory the job's process (the server's child) has held, MiB (Linux's /proc)."""
    try:
        children = open(f"/proc/{server_pid}/task/{server_pid}/children").read().split()
        for line in open(f"/proc/{children[0]}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, IndexError):
        pass
    return float("nan")


def word_share(sample: str, vocabulary: set[str]) -> tuple[int, float]:
    words = re.findall(r"[a-z]+", sample.lower())
    return len(words), (sum(w in vocabulary for w in words) / len(words) if words else 0.0)


def main(argv: list[str] | None = None) -> list[dict]:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=int, default=3, help="the run's time budget (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=20, help="requests of each kind per phase (default: %(default)s)")
    args = p.parse_args(argv)
    steps = None
    if args.quick:
        args.repeat, args.minutes, steps = 2, 1, 20
    facts = c.setup(args)
    ref = c.model_refs(args)[0]
    vocabulary = set(re.findall(r"[a-z]+", SAMPLE.read_text(encoding="utf-8").lower()))

    results: list[dict] = []
    with Server(ref.path, threads=args.threads) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        for url in REQUESTS.values():  # warm: the first request of each kind loads what it needs
            client.get(url).raise_for_status()
        phases: dict[str, dict[str, list[float]]] = {"idle before": {}, "training": {}, "idle after": {}}
        phases["idle before"] = {k: timed(client, u, args.repeat) for k, u in REQUESTS.items()}
        client.post("/training/live/start", data={"text": "stories", "size": "tiny", "minutes": str(args.minutes),
                                                  **({"steps": str(steps)} if steps else {})}).raise_for_status()
        while not client.get("/api/training/live").json()["points"][1:]:  # the job's process is up and stepping
            time.sleep(0.5)
        phases["training"] = {k: [] for k in REQUESTS}
        while client.get("/api/training/live").json()["state"] == "training":
            for k, u in REQUESTS.items():
                phases["training"][k] += timed(client, u, 1)
            if len(phases["training"][k]) >= args.repeat * 5:
                time.sleep(1.0)
        phases["idle after"] = {k: timed(client, u, args.repeat) for k, u in REQUESTS.items()}
        run = client.get("/api/training/live").json()
        memory = {"server": server.peak_rss_mib(), "job": job_peak_mib(server.proc.pid)}

    rows = []
    for k in REQUESTS:
        idle = c.median(phases["idle before"][k] + phases["idle after"][k])
        busy = c.median(phases["training"][k])
        results.append({"request": k, "idle_ms": idle * 1e3, "training_ms": busy * 1e3,
                        "training_p95_ms": c.percentile(phases["training"][k], 95) * 1e3,
                        "requests_while_training": len(phases["training"][k])})
        rows.append([k, c.ms(idle), c.ms(busy), c.ms(c.percentile(phases["training"][k], 95)),
                     len(phases["training"][k]), c.ratio(busy / idle)])
    c.table(["request", "idle p50 ms", "training p50 ms", "training p95 ms", "requests", "training / idle"], rows,
            title="A page's latency while a live run trains (its own process, one torch thread)")

    points = [pt for pt in run["points"] if pt["val_loss"] is not None]
    marks = []
    for minute in range(1, args.minutes + 1):
        before = [pt for pt in points if pt["elapsed_s"] <= minute * 60]
        if before:
            marks.append([f"{minute} min", before[-1]["step"], f"{before[-1]['val_loss']:.3f}"])
    first = next((pt for pt in points if pt["val_loss"] <= 2.0), None)
    rates = [pt["tokens_per_s"] for pt in run["points"] if pt["tokens_per_s"]]
    c.table(["training time", "step", "validation loss (nats per byte)"], marks,
            title=f"The tiny model on the stories sample ({run['parameters']:,} parameters; uniform guess "
                  f"{run['baselines']['uniform']:.2f}, byte frequencies {run['baselines']['unigram']:.2f})")
    print(f"validation loss <= 2.0 first at step {first['step']}, after {first['elapsed_s']:.0f} s of training"
          if first else "validation loss stayed above 2.0")
    print(f"bytes per second: median {c.median(rates):,.0f}" if rates else "no rate measured")
    print(f"peak resident memory: the job's process {memory['job']:,.0f} MiB, the server {memory['server']:,.0f} MiB")
    sample = next((s for s in run["samples"] if s["step"] == 500), None)
    if sample:
        n, share = word_share(sample["text"], vocabulary)
        print(f"step-500 sample ({n} words, {share:.0%} of them words of the training text):\n{sample['text']!r}")
    results.append({"run": {"minutes": args.minutes, "val_by_minute": marks, "first_below_2": first,
                            "median_bytes_per_s": c.median(rates) if rates else None,
                            "step_500_sample": sample, "peak_mib": memory}})
    c.write_json(args.json, facts, results)
    return results


if __name__ == "__main__":
    main()
