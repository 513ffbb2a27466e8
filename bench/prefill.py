"""Prefill latency: one forward over a prompt of 16 / 64 / 256 / 1024 tokens, ours vs transformers.

Two ways a prompt is run:
- prefill: into an empty KV cache, logits for the last position only (what generation does);
  the reference gets use_cache=True and logits_to_keep=1.
- full: a plain forward with logits at every position (what /api/score needs).

    .venv/bin/python -m bench.prefill [--models default,124m] [--threads 2]
"""

from __future__ import annotations

import torch

from bench import common as c

LENGTHS = (16, 64, 256, 1024)


def main(argv: list[str] | None = None) -> list[dict]:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15, help="timed rounds per length (default: %(default)s)")
    args = p.parse_args(argv)
    facts = c.setup(args)
    results = []
    for ref_model in c.model_refs(args):
        ours, ref = c.load_ours(ref_model.path), c.load_reference(ref_model.path)
        cfg = ours.config
        print(f"\n{ref_model.label}: {cfg.n_layer} layers x {cfg.n_embd} wide, {ref_model.note}; "
              f"max |logit difference| ours vs reference {c.max_logit_diff(ours, ref):.2e}")
        rows = []
        lengths = (16,) if args.quick else [t for t in LENGTHS if t <= cfg.n_ctx]
        skipped = [t for t in LENGTHS if t > cfg.n_ctx]
        for T in lengths:
            ids = torch.randint(0, cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(T))

            @torch.inference_mode()
            def ours_prefill():
                ours(ids, cache=ours.new_cache(1, max_len=T), last_only=True)

            @torch.inference_mode()
            def ref_prefill():
                ref(ids, use_cache=True, logits_to_keep=1)

            @torch.inference_mode()
            def ours_full():
                ours(ids)

            @torch.inference_mode()
            def ref_full():
                ref(ids, use_cache=False)

            repeat = 2 if args.quick else max(3, min(args.repeat, int(args.repeat * 64 / T) + 3))
            t = c.interleaved({"ours_prefill": ours_prefill, "ref_prefill": ref_prefill,
                               "ours_full": ours_full, "ref_full": ref_full}, repeat=repeat, budget_s=30)
            m = {k: c.median(v) for k, v in t.items()}
            results.append({"model": ref_model.label, "tokens": T, "rounds": len(t["ours_full"]),
                            **{f"{k}_ms": v * 1e3 for k, v in m.items()}})
            rows.append([T, c.ms(m["ours_prefill"]), c.ms(m["ref_prefill"]),
                         c.ratio(m["ours_prefill"] / m["ref_prefill"]),
                         c.ms(m["ours_full"]), c.ms(m["ref_full"]), c.ratio(m["ours_full"] / m["ref_full"])])
        c.table(["tokens", "ours prefill ms", "transformers prefill ms", "ours / ref",
                 "ours full-logits ms", "transformers full-logits ms", "ours / ref"], rows,
                title=f"Prefill latency, {ref_model.label} model (median of interleaved rounds; "
                      "ratio < 1 means ours is faster)")
        if skipped and not args.quick:
            print(f"(not run: {', '.join(map(str, skipped))} tokens exceed the context of {cfg.n_ctx})")
        del ours, ref
    c.write_json(args.json, facts, results)
    return results


if __name__ == "__main__":
    main()
