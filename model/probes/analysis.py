"""Looking inside forward passes: the numbers the API and the pages show.

Pure functions of (model, ids): each runs the model under inference_mode and
returns plain lists and dicts of rounded floats, so no caller holds a tensor
and every payload is JSON as it stands. Token ids only; the caller adds text.
Any model serves: GPT-2 (model/nets/gpt2.py) or the Llama family (model/nets/llama.py),
which share the activation names and the final norm's name (ln_f).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from model.probes.interventions import Intervention, Patch, hooks, recorder
from model.nets.net import CausalLM
from model.nets.record import NOTHING, Recorder
from model.decode.sampling import SamplingParams, entropy, largest, sample_step, warp

SIG = 6  # significant digits kept in payloads: enough for any plot, a third of float's text
CHUNK = 256  # positions unembedded at once: a (CHUNK, V) block of logits, not (T, V)
LENS_CHUNK = 64  # the lens' rows per product: as fast per row, and 13 MB of logits rather than 51 at a time




def rounded(x: float, sig: int = SIG) -> float:
    """x to `sig` significant digits, so tiny probabilities keep their size."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, sig - 1 - math.floor(math.log10(abs(x))))


def _ids(model: CausalLM, ids: Sequence[int]) -> torch.Tensor:
    if not ids:
        raise ValueError("at least one token is needed")
    return torch.tensor([list(ids)], dtype=torch.long, device=model.wte.weight.device)


def _unembed(model: CausalLM, x: torch.Tensor) -> torch.Tensor:
    """Final-normed hidden states (..., C) -> logits (..., V), as the model's forward does."""
    return model.unembed(x).float()


def _candidates(logits: torch.Tensor, probs: torch.Tensor, n: int) -> list[dict]:
    p, ids = torch.topk(probs, min(n, probs.shape[-1]))
    # as Python lists first: per-element tensor access costs microseconds, times 50,257
    return [{"id": i, "prob": rounded(q), "logit": rounded(z)}
            for i, q, z in zip(ids.tolist(), p.tolist(), logits[ids].tolist()) if q > 0]


@torch.inference_mode()
def next_logits(model: CausalLM, ids: Sequence[int], interventions: Sequence[Intervention | Patch] = ()) -> torch.Tensor:
    """The model's logits (V,) for the token after `ids`, with the interventions applied
    (model/probes/interventions.py)."""
    return model(_ids(model, ids), rec=recorder(interventions), last_only=True)[0, -1].float()


def next_token(model: CausalLM, ids: Sequence[int], params: SamplingParams, n: int = 10,
               targets: Sequence[int] = (), interventions: Sequence[Intervention | Patch] = ()) -> dict:
    """distribution() of the token after `ids`."""
    return distribution(next_logits(model, ids, interventions), params, n, targets)


@torch.inference_mode()
def distribution(logits: torch.Tensor, params: SamplingParams, n: int = 10, targets: Sequence[int] = ()) -> dict:
    """The distribution that logits (V,) give, before and after the warpers.

    `before` is the model's own top-n (softmax of its logits), `after` the top-n
    once temperature / top-k / top-p have acted (its logits are the warped ones);
    `mass` is how much probability `before` covers. Each target gets its rank
    (1 = most likely) and probability both ways; a token the warpers removed has
    prob_after 0 and rank_after None.
    """
    raw = logits.softmax(dim=-1)
    warped = warp(logits, params)
    after = warped.softmax(dim=-1)
    before = _candidates(logits, raw, n)
    found = []
    for t in targets:
        kept = bool(after[t] > 0)
        found.append({
            "id": int(t),
            "rank": int((raw > raw[t]).sum()) + 1,
            "prob": rounded(float(raw[t])),
            "logit": rounded(float(logits[t])),
            "rank_after": int((after > after[t]).sum()) + 1 if kept else None,
            "prob_after": rounded(float(after[t])),
        })
    return {
        "before": before,
        "after": _candidates(warped, after, n),
        "mass": rounded(sum(c["prob"] for c in before)),
        "entropy": rounded(entropy(logits)),
        "entropy_after": rounded(entropy(warped)),
        "support": int(torch.isfinite(warped).sum()),
        "targets": found,
    }


@torch.inference_mode()
def draw(model: CausalLM, ids: Sequence[int], params: SamplingParams, seed: int,
         interventions: Sequence[Intervention | Patch] = ()) -> int:
    """One token after `ids`, drawn by a generator seeded with `seed` (greedy at temperature 0)."""
    generator = torch.Generator(device=model.wte.weight.device).manual_seed(seed)
    return sample_step(next_logits(model, ids, interventions), params, generator, n=1).id


@torch.inference_mode()
def chosen(model: CausalLM, ids: Sequence[int], start: int, params: SamplingParams,
           interventions: Sequence[Intervention | Patch] = ()) -> list[dict]:
    """For each token after position `start` (ids[start + 1:], tokens appended one at a time): its
    probability under the model's own distribution ("raw") and after the warpers ("prob"), given
    the tokens before it. One forward for all of them."""
    if start + 1 >= len(ids):
        return []
    x = _ids(model, ids)
    hidden = model.hidden(x, rec=recorder(interventions) or NOTHING)[0, start:-1]  # the state at p predicts token p + 1
    target = x[0, start + 1:, None]
    out = []
    for s in range(0, hidden.shape[0], CHUNK):
        logits = _unembed(model, hidden[s:s + CHUNK])
        t = target[s:s + CHUNK]
        raw = logits.softmax(dim=-1).gather(-1, t)[:, 0]
        warped = warp(logits, params).softmax(dim=-1).gather(-1, t)[:, 0]
        out += [{"raw": rounded(r), "prob": rounded(w)} for r, w in zip(raw.tolist(), warped.tolist())]
    return out


@torch.inference_mode()
def score(model: CausalLM, ids: Sequence[int], interventions: Sequence[Intervention | Patch] = ()) -> dict:
    """How well the model predicts each actual next token of `ids`.

    Position p (1..T-1) is predicted from tokens 0..p-1: its probability, its
    loss -log p (nats), its rank, and the model's own top guess there. The mean
    loss is what training minimises; perplexity is exp of it.
    """
    x = _ids(model, ids)
    if x.shape[1] < 2:
        raise ValueError("scoring needs at least two tokens: the first has nothing before it to predict it")
    hidden = model.hidden(x, rec=recorder(interventions) or NOTHING)[0, :-1]  # the state at p predicts token p + 1
    target = x[0, 1:]
    logp_chunks, guess_chunks, rank_chunks = [], [], []
    for s in range(0, hidden.shape[0], CHUNK):
        logp = _unembed(model, hidden[s:s + CHUNK]).log_softmax(dim=-1)  # (chunk, V)
        t = target[s:s + CHUNK]
        lp = logp.gather(-1, t[:, None])[:, 0]
        logp_chunks.append(lp)
        guess_chunks.append(logp.max(dim=-1))
        rank_chunks.append((logp > lp[:, None]).sum(dim=-1) + 1)
    lp = torch.cat(logp_chunks)
    mean = float(-lp.mean())
    columns = zip(target.tolist(), lp.tolist(), torch.cat(rank_chunks).tolist(),
                  torch.cat([g.indices for g in guess_chunks]).tolist(),
                  torch.cat([g.values for g in guess_chunks]).tolist())
    predictions = [
        {"position": p + 1, "id": t, "prob": rounded(math.exp(v)), "loss": rounded(-v), "rank": r,
         "top_id": g, "top_prob": rounded(math.exp(gv))}
        for p, (t, v, r, g, gv) in enumerate(columns)
    ]
    return {"predictions": predictions, "mean_loss": rounded(mean), "perplexity": rounded(math.exp(mean))}


def stream_labels(n_layer: int) -> list[str]:
    """The residual stream's states: after the embeddings, then after each block."""
    return ["embeddings"] + [f"after block {i}" for i in range(n_layer)]


@torch.inference_mode()
def activations(model: CausalLM, ids: Sequence[int], *, positions: Sequence[int] | None = None,
                residual_norms: bool = False, attention: dict[int, Sequence[int]] | None = None,
                neurons: int = 0, logit_lens: int = 0, interventions: Sequence[Intervention | Patch] = ()) -> dict:
    """What one forward pass computes, only the parts asked for, at the chosen positions.

    - residual_norms: the L2 norm of the residual stream at each state (see
      stream_labels) and position: [state][position].
    - attention: {layer: heads}; each head's pattern, one row per query position
      holding its weights over keys 0..q (later keys are masked, so left out).
    - neurons: the k largest MLP activations per layer and position (GPT-2's after
      GELU; the Llama family's gate times up, SwiGLU's hidden layer).
    - logit_lens: each residual state through the model's own final norm (GPT-2's
      LayerNorm, the Llama family's RMSNorm) and its lm head: the k most likely
      tokens per position. The last state is exactly the model's own prediction.

    With interventions, everything is of the forward with those parts switched off.
    """
    x = _ids(model, ids)
    T, L = x.shape[1], model.config.n_layer
    pos = list(range(T)) if positions is None else list(positions)
    attention = attention or {}
    names = [f"blocks.{layer}.attn.pattern" for layer in attention]
    if residual_norms or logit_lens:
        names += ["blocks.0.resid_pre", "blocks.*.resid_post"]
    if neurons:
        names.append("blocks.*.mlp.post")
    rec = Recorder(names, hooks(interventions))
    model.hidden(x, rec=rec)
    out: dict = {"positions": pos}
    index = torch.tensor(pos, dtype=torch.long, device=x.device)

    if residual_norms or logit_lens:
        states = [s[0].index_select(0, index) for s in _states(rec, L)]  # each (P, C)
    if residual_norms:
        out["residual_norms"] = {
            "labels": stream_labels(L),
            "norms": [[rounded(v) for v in s.float().norm(dim=-1).tolist()] for s in states],
        }
    if attention:
        out["attention"] = []
        for layer, heads in attention.items():
            pattern = rec[f"blocks.{layer}.attn.pattern"][0].float()  # (H, T, T)
            for h in heads:
                rows = [[rounded(v) for v in pattern[h, q, :q + 1].tolist()] for q in pos]
                out["attention"].append({"layer": layer, "head": h, "pattern": rows})
    if neurons:
        out["neurons"] = []
        for layer in range(L):
            acts = rec[f"blocks.{layer}.mlp.post"][0].index_select(0, index).float()  # (P, MLP width)
            vals, idx = acts.topk(min(neurons, acts.shape[-1]), dim=-1)
            out["neurons"].append({"layer": layer, "top": [
                [{"neuron": i, "value": rounded(v)} for i, v in zip(ri, rv)]
                for ri, rv in zip(idx.tolist(), vals.tolist())]})
    if logit_lens:
        # every state's positions through the head together (fewer, larger products); the fused
        # log_softmax then a block search for the top tokens (torch.topk over 50k is 4x slower)
        stacked = torch.cat(states)  # (states * P, C)
        top = []
        for c in range(0, stacked.shape[0], LENS_CHUNK):
            logp = _unembed(model, model.ln_f(stacked[c:c + LENS_CHUNK])).log_softmax(dim=-1)
            values, idx = largest(logp, min(logit_lens, logp.shape[-1]))
            probs = values.exp()
            top += [[{"id": i, "prob": rounded(q)} for i, q in zip(ri, rp)]
                    for ri, rp in zip(idx.tolist(), probs.tolist())]
        P = len(pos)
        out["logit_lens"] = [{"label": label, "top": top[i * P:(i + 1) * P]}
                             for i, label in enumerate(stream_labels(L))]
    return out


def _states(rec: Recorder, n_layer: int) -> list[torch.Tensor]:
    """The residual stream after the embeddings and after each block, each (B, T, C), from a recorder that kept
    blocks.0.resid_pre and blocks.*.resid_post."""
    return [rec["blocks.0.resid_pre"]] + [rec[f"blocks.{i}.resid_post"] for i in range(n_layer)]


@torch.inference_mode()
def lens_probs(model: CausalLM, ids: Sequence[int], tokens: Sequence[int],
               interventions: Sequence[Intervention | Patch] = ()) -> list[float]:
    """The logit lens at the last position, as activations reads it: state i's probability of tokens[i] (one
    token per state, a guess of another run, to see how it moved)."""
    rec = Recorder(["blocks.0.resid_pre", "blocks.*.resid_post"], hooks(interventions))
    model.hidden(_ids(model, ids), rec=rec)
    last = torch.stack([s[0, -1] for s in _states(rec, model.config.n_layer)])  # (states, C)
    logp = _unembed(model, model.ln_f(last)).float().log_softmax(dim=-1)
    picked = logp.gather(-1, torch.tensor(list(tokens), device=logp.device)[:, None])[:, 0]
    return [rounded(v) for v in picked.exp().tolist()]
