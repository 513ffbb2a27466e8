"""The cost of interventions: a next-token request with parts switched off, and the activation patching grid.

1. In process, per model: the next-token distribution (analysis.next_token, what /api/next-token runs) plain,
   against the same with interventions: one head zeroed, one head mean-ablated, and a set of eight parts
   (four heads, two neurons, an attention, an MLP). Goal: ≤ 1.3x plain.
2. The patching grid (interventions.patch_grid, what /api/patch runs) on a 24-token prompt: blocks x 24 cells,
   batched. Goal: ≤ 1 s on the default model.

    .venv/bin/python -m bench.interventions [--models default,124m] [--threads 2]
"""

from __future__ import annotations

import torch

from bench import common as c
from model.probes import analysis
from model.probes.interventions import Intervention, patch_grid
from model.decode.sampling import SamplingParams

PATCH_TOKENS = 24


def ids_of(n: int, vocab: int, seed: int) -> list[int]:
    return torch.randint(0, min(vocab, 50000), (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def run(ref: c.ModelRef, args) -> tuple[list[list[object]], list[list[object]], dict]:
    model = c.load_ours(ref.path)
    cfg = model.config
    L, H = cfg.n_layer, cfg.n_head
    print(f"\n{ref.label}: {L} layers x {cfg.n_embd} wide, {ref.note}")
    T = 16 if args.quick else 64
    ids = ids_of(T, cfg.vocab_size, 1)
    params = SamplingParams()
    sets = {
        "plain": [],
        "one head zeroed": [Intervention("head", L - 1, 0)],
        "one head, mean": [Intervention("head", L - 1, 0, "mean")],
        "eight parts": [Intervention("head", b % L, h % H) for b, h in ((0, 1), (1, 2), (2, 3), (3, 4))]
        + [Intervention("neuron", 0, 5), Intervention("neuron", L - 1, 7, "mean"), Intervention("attn", L // 2),
           Intervention("mlp", L - 1)],
    }
    fns = {name: (lambda ivs=ivs: analysis.next_token(model, ids, params, 10, (), ivs)) for name, ivs in sets.items()}
    repeat = 3 if args.quick else 40
    t = c.interleaved(fns, repeat=repeat, warmup=2)
    plain = c.median(t["plain"])
    rows = [[ref.label, T, name, c.ms(c.median(t[name])), c.ratio(c.median(t[name]) / plain)] for name in sets]

    n = 8 if args.quick else min(PATCH_TOKENS, cfg.n_ctx)
    clean, corrupted = ids_of(n, cfg.vocab_size, 2), ids_of(n, cfg.vocab_size, 3)
    g = c.interleaved({"grid": lambda: patch_grid(model, clean, corrupted, 11, 12),
                       "one forward": lambda: analysis.next_logits(model, corrupted)}, repeat=2 if args.quick else 7)
    grid_s, one_s = c.median(g["grid"]), c.median(g["one forward"])
    patch_rows = [[ref.label, f"{L} × {n} = {L * n}", c.ms(grid_s), c.ms(one_s), f"{grid_s / one_s:.1f}"]]
    return rows, patch_rows, {"model": ref.label, "next_token_ms": {k: c.median(v) * 1e3 for k, v in t.items()},
                              "grid_ms": grid_s * 1e3, "cells": L * n, "one_forward_ms": one_s * 1e3}


def main() -> None:
    p = c.parser(__doc__.split("\n\n")[0])
    args = p.parse_args()
    facts = c.setup(args)
    rows, patch_rows, results = [], [], []
    for ref in c.model_refs(args):
        r, pr, res = run(ref, args)
        rows += r
        patch_rows += pr
        results.append(res)
    c.table(["model", "tokens", "switched off", "next-token ms (median)", "vs plain"], rows,
            "A next-token request with parts switched off (in process)")
    c.table(["model", "cells (blocks × tokens)", "grid ms (median)", "one plain forward ms", "grid / forward"],
            patch_rows, f"The patching grid, {PATCH_TOKENS}-token prompts, batched")
    c.write_json(args.json, facts, results)


if __name__ == "__main__":
    main()
