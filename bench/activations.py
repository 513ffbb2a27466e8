"""The cost of looking inside: recording activations, and the /api/activations endpoint.

1. In process, per model and prompt length: a plain forward (logits) against the same forward
   recording every activation model/nets/record.py names (attention patterns included, so
   attention runs as an explicit softmax instead of the fused kernel). The reference's
   ratio is transformers with output_hidden_states + output_attentions (eager attention)
   against its plain forward. Goal: ours recorded ≤ 1.5x ours plain.
2. Through a real server: /api/activations for 64- and 256-token prompts, the two requests
   the internals page sends (its "main" one: residual norms, logit lens top 3, top 5 neurons;
   and one block's attention, all heads): p50 / p95 latency and response size.
   Goal: p50 ≤ 100 ms for a 64-token prompt on the default model.

    .venv/bin/python -m bench.activations [--models default,124m] [--threads 2]
"""

from __future__ import annotations

import time

import httpx
import torch

from bench import common as c
from bench.server import Server
from model.probes import analysis
from model.nets.record import Recorder, all_names

LENGTHS = (64, 256, 1024)
ENDPOINT_LENGTHS = (64, 256)
REQUESTS = {  # what the internals page computes (app/pages/internals.py asks for both in one request)
    "main (norms, lens 3, neurons 5)": dict(logit_lens=3, neurons=5),
    "attention (1 block, all heads)": dict(residual_norms=False, attention=[{"layer": 0}]),
}


def prompt_ids(n: int, vocab: int) -> list[int]:
    return torch.randint(0, min(vocab, 50000), (n,), generator=torch.Generator().manual_seed(n)).tolist()


def in_process(ref_model: c.ModelRef, args) -> list[dict]:
    ours, ref = c.load_ours(ref_model.path), c.load_reference(ref_model.path)
    cfg = ours.config
    print(f"\n{ref_model.label}: {cfg.n_layer} layers x {cfg.n_embd} wide, {ref_model.note}; "
          f"max |logit difference| ours vs reference {c.max_logit_diff(ours, ref):.2e}")
    names = all_names(cfg.n_layer)
    rows, results = [], []
    lengths = (16,) if args.quick else [t for t in LENGTHS if t <= cfg.n_ctx]
    for T in lengths:
        ids = torch.tensor([prompt_ids(T, cfg.vocab_size)])
        ids_list = ids[0].tolist()

        @torch.inference_mode()
        def ours_plain():
            ours(ids)

        @torch.inference_mode()
        def ours_record():
            rec = Recorder(names)
            ours(ids, rec=rec)
            assert len(rec.acts) == len(names)

        @torch.inference_mode()
        def ref_plain():
            ref.set_attn_implementation("sdpa")
            ref(ids, use_cache=False)

        @torch.inference_mode()
        def ref_record():
            ref.set_attn_implementation("eager")  # the only one that returns attention weights
            ref(ids, use_cache=False, output_hidden_states=True, output_attentions=True)

        def main_request():
            analysis.activations(ours, ids_list, residual_norms=True, logit_lens=3, neurons=5)

        def attention_request():
            analysis.activations(ours, ids_list, attention={0: list(range(cfg.n_head))})

        repeat = 2 if args.quick else max(5, min(args.repeat, int(args.repeat * 64 / T) + 4))
        t = c.interleaved({"ours_plain": ours_plain, "ours_record": ours_record, "ref_plain": ref_plain,
                           "ref_record": ref_record, "main": main_request, "attention": attention_request},
                          repeat=repeat, budget_s=40)
        ref.set_attn_implementation("sdpa")
        m = {k: c.median(v) for k, v in t.items()}
        ours_cost, ref_cost = m["ours_record"] / m["ours_plain"], m["ref_record"] / m["ref_plain"]
        results.append({"model": ref_model.label, "tokens": T, **{f"{k}_ms": v * 1e3 for k, v in m.items()},
                        "ours_record_vs_plain": ours_cost, "ref_record_vs_plain": ref_cost})
        rows.append([T, c.ms(m["ours_plain"]), c.ms(m["ours_record"]), c.ratio(ours_cost),
                     c.ms(m["ref_plain"]), c.ms(m["ref_record"]), c.ratio(ref_cost),
                     c.ratio(m["ours_record"] / m["ref_record"]), c.ms(m["main"]), c.ms(m["attention"])])
    c.table(["tokens", "ours plain ms", "ours recording all ms", "record / plain (goal ≤ 1.5×)",
             "ref plain ms", "ref hidden+attentions ms", "ref ratio", "ours / ref recorded",
             "analysis 'main' ms", "analysis 'attention' ms"], rows,
            title=f"Recording activations in process, {ref_model.label} model ({len(names)} activations "
                  f"recorded; the analysis columns are model/analysis.activations for the page's two requests)")
    return results


def endpoint(ref_model: c.ModelRef, args) -> list[dict]:
    rows, results = [], []
    with Server(ref_model.path) as server, httpx.Client(timeout=60) as client:
        cfg = client.get(f"{server.url}/api/model").json()
        lengths = (16,) if args.quick else [t for t in ENDPOINT_LENGTHS if t <= cfg["n_ctx"]]
        for T in lengths:
            ids = prompt_ids(T, cfg["vocab_size"])
            for name, extra in REQUESTS.items():
                body = {"ids": ids, **extra}
                r = client.post(f"{server.url}/api/activations", json=body)  # warm-up, and the size
                if r.status_code != 200:
                    raise RuntimeError(f"/api/activations answered {r.status_code}: {r.text[:300]}")
                size = len(r.content)
                times = []
                for _ in range(2 if args.quick else args.endpoint_repeat):
                    t0 = time.perf_counter()
                    r = client.post(f"{server.url}/api/activations", json=body)
                    times.append(time.perf_counter() - t0)
                    r.raise_for_status()
                p50 = c.median(times)
                results.append({"model": ref_model.label, "tokens": T, "request": name, "p50_ms": p50 * 1e3,
                                "p95_ms": c.percentile(times, 95) * 1e3, "bytes": size})
                goal = "≤ 100 ms: " + ("met" if p50 <= 0.1 else "NOT met") if T == 64 and "main" in name else ""
                rows.append([T, name, c.ms(p50), c.ms(c.percentile(times, 95)), f"{size / 1024:.1f}", goal])
    c.table(["tokens", "request", "p50 ms", "p95 ms", "response KiB", "goal (64 tokens, default model)"], rows,
            title=f"/api/activations through the server, {ref_model.label} model "
                  f"({args.endpoint_repeat} sequential requests each)")
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20, help="in-process rounds at 64 tokens (default: %(default)s)")
    p.add_argument("--endpoint-repeat", type=int, default=30, help="requests per endpoint row (default: %(default)s)")
    args = p.parse_args(argv)
    facts = c.setup(args)
    results = []
    for ref_model in c.model_refs(args):
        results += in_process(ref_model, args)
        results += endpoint(ref_model, args)
    c.write_json(args.json, facts, results)
    return results


if __name__ == "__main__":
    main()
