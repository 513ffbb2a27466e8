"""Single-stream decode with the KV cache, greedy and sampled: ours vs transformers' generate.

Ours is model/generate.generate(), the engine's own path: each step also computes what
the pages show (the top alternatives before and after the warpers, the entropy).
The reference is GPT2LMHeadModel.generate(use_cache=True) on the same weights, with a
streamer that stamps each token's arrival. Both start from the same 32-token prompt and
produce exactly --new tokens (the end-of-text token does not stop either).

    .venv/bin/python -m bench.decode [--models default,124m] [--threads 2] [--new 128]

tokens/s counts every new token over the whole call (prefill included); the step time is
the median gap between consecutive tokens (decode only).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench import common as c
from model.decode.generate import generate
from model.loading import load_model
from model.decode.sampling import SamplingParams

PROMPT_TOKENS = 32
MODES = {  # name: (our params, the reference's generate kwargs)
    "greedy": (SamplingParams(temperature=0), dict(do_sample=False)),
    "sampled (T 0.8)": (SamplingParams(temperature=0.8), dict(do_sample=True, temperature=0.8, top_k=0, top_p=1.0)),
}


class Stamps:
    """A transformers streamer that notes when each new token arrives (the first put is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.prompt_seen = False

    def put(self, value) -> None:
        if self.prompt_seen:
            self.times.append(time.perf_counter())
        self.prompt_seen = True

    def end(self) -> None:
        pass


def run_ours(model, prompt: list[int], params: SamplingParams, new: int, n_top: int, seed: int) -> dict:
    t0 = time.perf_counter()
    stamps, ids = [], []
    for step in generate(model, prompt, params, new, seed=seed, n=n_top):
        stamps.append(time.perf_counter())
        ids.append(step.id)
    return {"t0": t0, "stamps": stamps, "ids": ids}


def run_ref(model, prompt: list[int], kwargs: dict, new: int, seed: int) -> dict:
    torch.manual_seed(seed)
    ids = torch.tensor([prompt])
    streamer = Stamps()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, use_cache=True,
                             pad_token_id=0, streamer=streamer, **kwargs)
    return {"t0": t0, "stamps": streamer.times, "ids": out[0, len(prompt):].tolist()}


def summarize(runs: list[dict]) -> dict:
    tps = [len(r["stamps"]) / (r["stamps"][-1] - r["t0"]) for r in runs]
    gaps = [b - a for r in runs for a, b in zip(r["stamps"], r["stamps"][1:])]
    return {"tokens_per_s": c.median(tps), "step_ms": c.median(gaps) * 1e3, "step_p95_ms": c.percentile(gaps, 95) * 1e3,
            "first_token_ms": c.median([r["stamps"][0] - r["t0"] for r in runs]) * 1e3}


@torch.inference_mode()
def accuracy_cost(ours, low, prompt: list[int], ids: list[int]) -> dict:
    """How far 16-bit weights move the model: over the fp32 greedy text, the mean KL divergence of
    next-token distributions, how often the top token agrees, and the largest change in a
    displayed probability."""
    x = torch.tensor([prompt + ids])
    a = ours(x).float().log_softmax(-1)[0]
    b = low(x).float().log_softmax(-1)[0]
    return {"kl_nats": float((a.exp() * (a - b)).sum(-1).mean()),
            "top1_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
            "max_prob_change": float((a.exp() - b.exp()).abs().max())}


def measure(label: str, note: str, ours, ref, low, args, others: dict | None = None) -> list[dict]:
    """Both decode modes on one model: ours in fp32 (and in bf16 when `low` is given) against the
    reference in fp32, timed in alternation; prints the table and returns the results. `others` adds
    rows, timed in the same rounds: a row's label -> run(prompt, params, new, n_top, seed), as run_ours."""
    results = []
    ref.generation_config.eos_token_id = None  # run to --new tokens, as ours does
    cfg = ours.config
    print(f"\n{label}: {cfg.n_layer} layers x {cfg.n_embd} wide, {note}; "
          f"max |logit difference| ours vs reference {c.max_logit_diff(ours, ref):.2e}")
    new = min(args.new, cfg.n_ctx - PROMPT_TOKENS)
    prompt = torch.randint(0, cfg.vocab_size, (PROMPT_TOKENS,), generator=torch.Generator().manual_seed(1)).tolist()
    rows = []
    for mode, (params, kwargs) in MODES.items():
        got: dict[str, list[dict]] = {"ours": [], "ref": [], "bf16": [], **{k: [] for k in others or {}}}
        pending: dict[str, dict] = {}
        seeds = iter(range(10**6))
        fns = {"ours": lambda: pending.__setitem__("ours", run_ours(ours, prompt, params, new, args.n_top,
                                                                    next(seeds))),
               "ref": lambda: pending.__setitem__("ref", run_ref(ref, prompt, kwargs, new, next(seeds)))}
        if low is not None:
            fns["bf16"] = lambda: pending.__setitem__("bf16", run_ours(low, prompt, params, new, args.n_top,
                                                                       next(seeds)))
        for name, other in (others or {}).items():
            fns[name] = lambda name=name, other=other: pending.__setitem__(
                name, other(prompt, params, new, args.n_top, next(seeds)))

        def on_round(kept: bool) -> None:
            if kept:
                for k, v in pending.items():
                    got[k].append(v)
            pending.clear()

        c.interleaved(fns, repeat=args.repeat, warmup=1, on_round=on_round)
        if params.greedy:  # same weights, same argmax: a check that both did the same work
            agree = sum(a == b for a, b in zip(got["ours"][0]["ids"], got["ref"][0]["ids"])) / new
        else:
            agree = float("nan")
        o, r = summarize(got["ours"]), summarize(got["ref"])
        speedup = o["tokens_per_s"] / r["tokens_per_s"]
        results.append({"model": label, "mode": mode, "weights": "fp32", "new_tokens": new,
                        "runs": len(got["ours"]), "ours": o, "ref": r, "speedup": speedup,
                        "greedy_agreement": agree})
        rows.append([mode, "fp32", f"{o['tokens_per_s']:.1f}", f"{r['tokens_per_s']:.1f}", c.ratio(speedup),
                     f"{o['step_ms']:.2f}", f"{r['step_ms']:.2f}", f"{o['first_token_ms']:.1f}",
                     f"{r['first_token_ms']:.1f}", "—" if agree != agree else f"{agree:.0%}"])
        # bf16 and the other rows, each against the same fp32 reference
        for name in [*(["bf16"] if low is not None else []), *(others or {})]:
            b = summarize(got[name])
            speedup = b["tokens_per_s"] / r["tokens_per_s"]
            results.append({"model": label, "mode": mode, "weights": name, "new_tokens": new,
                            "runs": len(got[name]), "ours": b, "ref": r, "speedup": speedup})
            rows.append([mode, name, f"{b['tokens_per_s']:.1f}", f"{r['tokens_per_s']:.1f}", c.ratio(speedup),
                         f"{b['step_ms']:.2f}", f"{r['step_ms']:.2f}", f"{b['first_token_ms']:.1f}",
                         f"{r['first_token_ms']:.1f}", ""])
    c.table(["mode", "our weights", "ours tok/s", "transformers tok/s (fp32)", "ours / ref (goal ≥ 1.2×)",
             "ours step ms", "ref step ms", "ours 1st token ms", "ref 1st token ms", "same greedy tokens"], rows,
            title=f"Single-stream decode, {label} model: {PROMPT_TOKENS}-token prompt + {new} new "
                  f"tokens, median of {args.repeat} interleaved runs")
    if low is not None:
        greedy_ids = run_ours(ours, prompt, MODES["greedy"][0], new, 0, 0)["ids"]
        cost = accuracy_cost(ours, low, prompt, greedy_ids)
        results.append({"model": label, "bf16_accuracy": cost})
        print(f"\nbf16 weights, accuracy cost over the {PROMPT_TOKENS + new}-token greedy text: mean KL(fp32 || bf16) "
              f"{cost['kl_nats']:.2e} nats per token; top token agrees at {cost['top1_agreement']:.1%} of "
              f"positions; largest change in any probability {cost['max_prob_change']:.2g}")
    return results


def parse_args(description: str, argv: list[str] | None, models: str | None = None) -> argparse.Namespace:
    """The shared options, and what this benchmark adds to them (`models`: another default for --models)."""
    p = c.parser(description)
    if models:
        p.set_defaults(models=models)
    p.add_argument("--new", type=int, default=128, help="new tokens per run (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each (default: %(default)s)")
    p.add_argument("--n-top", type=int, default=5,
                   help="alternatives our steps list, as the generate endpoint's default (default: %(default)s)")
    p.add_argument("--no-bf16", action="store_true", help="skip the row with our model in bfloat16")
    args = p.parse_args(argv)
    if args.quick:
        args.new, args.repeat = 8, 1
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(__doc__.splitlines()[0], argv)
    facts = c.setup(args)
    results = []
    for ref_model in c.model_refs(args):
        ours, ref = c.load_ours(ref_model.path), c.load_reference(ref_model.path)
        low = None if args.no_bf16 else load_model(ref_model.path, dtype=torch.bfloat16).model
        results += measure(ref_model.label, ref_model.note, ours, ref, low, args)
        del ours, ref, low
    c.write_json(args.json, facts, results)
    return results


if __name__ == "__main__":
    main()
