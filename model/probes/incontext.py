"""Does a model learn from its prompt? Three measurements of in-context copying.

    python -m model.probes.incontext CHECKPOINT      (any GPT-2 checkpoint, e.g. real GPT-2 to compare)

- repeated words: 20 random common words, then the same 20 again. A model that reads its
  context predicts the second copy; one that does not pays as much as for the first.
  The second copy is scored from its second word on: its first word follows the
  twentieth, which nothing earlier was followed by, so no copying can predict it.
- invented names: short stories that introduce a name never seen in training
  (augment.RESERVED_NAMES) and use it again; the loss per token of its later uses.
- heads: on random common words repeated once, each head's mean attention on the
  previous token (a previous-token head), on the token after the current token's
  earlier occurrence (an induction head), and on the first token (an "attention sink").
  The same scores on any text rank the heads on the Internals page.

Every probe is fixed (seeded), so figures are comparable across checkpoints. The head scores
work on any model (GPT-2 or the Llama family, whose patterns are recorded per query head),
and all three are measured in the model's own tokens.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from model.training.augment import RESERVED_NAMES
from model.nets.net import CausalLM
from model.nets.record import Recorder
from model.tokenizers.tokenizer import EOT_ID, gpt2_encoding

COMMON_WORDS = (
    "the a and to was he she they it in on with for his her big little happy sad day dog cat bird tree "
    "house ball toy mom dad friend park sun water food box car red blue green small old new good bad "
    "play run jump walk look see saw find found help said say went go come came like love want wanted "
    "time morning night sky grass flower fish boat hat cake cookie apple girl boy king queen room door "
    "bed book game song smile hug kind nice fun warm cold fast slow loud quiet soft hard tall long "
    "bright dark yellow pink black white brown gold sand rock hill road town farm cow pig duck frog bear"
).split()

NAME_STORIES = (
    "Once upon a time, there was a little bird named {n}. {n} loved to sing in the big tree. "
    "One day, {n} saw a cat.",
    "There was a girl named {n}. {n} had a red ball. She liked to play with it every day. "
    "One morning, {n} could not find her ball.",
    "Tom had a new friend. His name was {n}. Tom and {n} played in the park all day. "
    "When the sun went down, {n} said goodbye.",
)
PROBE_NAMES = sorted(RESERVED_NAMES)[:6]


class Encoder(Protocol):
    """Anything that turns text into ids without special tokens: a tiktoken.Encoding, or the tokenizers of
    model/tokenizers/tokenizer.py and model/tokenizers/hf_tokenizer.py."""

    encode: Callable[..., list[int]]


@dataclass
class HeadScores:
    previous_token: torch.Tensor  # (L, H)
    induction: torch.Tensor       # (L, H)
    first_token: torch.Tensor     # (L, H)


def common_word_ids(enc: Encoder) -> list[int]:
    """COMMON_WORDS that are one token with their leading space, as ids."""
    ids = [enc.encode(" " + w) for w in COMMON_WORDS]
    return [i[0] for i in ids if len(i) == 1]


@torch.no_grad()
def token_losses(model: CausalLM, ids: list[int]) -> torch.Tensor:
    """Loss (nats) of each token given those before it; entry t is the loss of ids[t + 1]."""
    x = torch.tensor(ids, device=model.wte.weight.device)[None]
    logits = model(x[:, :-1]).float()
    return F.cross_entropy(logits[0], x[0, 1:], reduction="none").cpu()


def repeated_words(model: CausalLM, enc: Encoder, n_words: int = 20, trials: int = 16,
                   seed: int = 0, start: int = EOT_ID) -> dict[str, float]:
    pool, rng = common_word_ids(enc), random.Random(seed)
    first, second, second_all = [], [], []
    for _ in range(trials):
        words = rng.sample(pool, n_words)
        losses = token_losses(model, [start] + words + words)  # losses[t] scores token t + 1
        first.append(losses[1:n_words].mean())             # the first copy from its second word
        second.append(losses[n_words + 1:].mean())          # the second copy from its second word
        second_all.append(losses[n_words:].mean())
    mean = lambda xs: round(float(torch.stack(xs).mean()), 3)  # noqa: E731
    return {"first_copy": mean(first), "second_copy": mean(second), "second_copy_all_words": mean(second_all)}


def invented_names(model: CausalLM, enc: Encoder, start: int = EOT_ID) -> dict[str, float]:
    """Mean loss per token of a name's later uses, after the story introduced it once."""
    later, first, first_piece, rest = [], [], [], []
    for story in NAME_STORIES:
        for name in PROBE_NAMES:
            ids = [start] + enc.encode(story.format(n=name))
            name_ids = enc.encode(" " + name)
            starts = [t for t in range(len(ids)) if ids[t:t + len(name_ids)] == name_ids]
            losses = token_losses(model, ids)
            uses = [losses[s - 1:s - 1 + len(name_ids)] for s in starts]
            first.append(uses[0])
            later += uses[1:]
            first_piece += [u[:1] for u in uses[1:]]  # only reading the story predicts this piece
            rest += [u[1:] for u in uses[1:]]          # the rest, copying alone predicts
    mean = lambda xs: round(float(torch.cat(xs).mean()), 3) if torch.cat(xs).numel() else None  # noqa: E731
    return {"name_first_use": mean(first), "name_later_uses": mean(later),
            "name_later_first_piece": mean(first_piece), "name_later_rest": mean(rest)}


def random_words(n_words: int, seed: int = 0) -> str:
    return " ".join(random.Random(seed).sample(COMMON_WORDS, n_words))


def probe_words(n_words: int = 40, seed: int = 0) -> str:
    """The head finder's probe as text: n_words random common words, then the same words again."""
    line = random_words(n_words, seed)
    return line + " " + line


def expected_positions(ids: list[int]) -> dict[str, list[tuple[int, int]]]:
    """(query, key) pairs each kind of head attends to: the previous token; the token after the
    current token's most recent earlier occurrence (induction); the first token."""
    last_seen: dict[int, int] = {}
    induction = []
    for t, tok in enumerate(ids):
        j = last_seen.get(tok)
        if j is not None and j + 1 < t:
            induction.append((t, j + 1))
        last_seen[tok] = t
    T = len(ids)
    return {"previous_token": [(t, t - 1) for t in range(1, T)], "induction": induction,
            "first_token": [(t, 0) for t in range(1, T)]}


@torch.no_grad()
def head_scores(model: CausalLM, seqs: list[list[int]]) -> HeadScores:
    """Each head's mean attention on the expected position of each kind, over the sequences
    (of one length) and the positions where that kind expects something."""
    x = torch.tensor(seqs, device=model.wte.weight.device)
    rec = Recorder(["blocks.*.attn.pattern"])
    model(x, rec=rec)
    pairs = [expected_positions(ids) for ids in seqs]
    scores = {}
    for kind in ("previous_token", "induction", "first_token"):
        b = torch.tensor([i for i, p in enumerate(pairs) for _ in p[kind]], dtype=torch.long)
        q = torch.tensor([t for p in pairs for t, _ in p[kind]], dtype=torch.long)
        k = torch.tensor([j for p in pairs for _, j in p[kind]], dtype=torch.long)
        per_layer = []
        for i in range(model.config.n_layer):
            pattern = rec[f"blocks.{i}.attn.pattern"].float().cpu()  # (B, H, T, T)
            picked = pattern[b, :, q, k]                                 # (pairs, H)
            per_layer.append(picked.mean(0) if len(b) else torch.zeros(pattern.shape[1]))
        scores[kind] = torch.stack(per_layer)
    return HeadScores(**scores)


def repeated_tokens(length: int = 40, trials: int = 8, seed: int = 0, enc: Encoder | None = None,
                    start: int | None = EOT_ID) -> list[list[int]]:
    """The card's head probe: the start token (GPT-2's <|endoftext|>; none where start is None), `length`
    random common words, the same words again. enc: the model's tokenizer (GPT-2's by default); a small
    vocabulary with fewer common words of one token gets as many as it has."""
    pool, rng = common_word_ids(enc or gpt2_encoding()), random.Random(seed)
    if len(pool) < 2:
        raise ValueError("the tokenizer has fewer than two common words of one token, too few to repeat")
    seqs = []
    for _ in range(trials):
        words = rng.sample(pool, min(length, len(pool)))
        seqs.append(([] if start is None else [start]) + words + words)
    return seqs


def repeats(ids: list[int], losses: list[float]) -> dict | None:
    """How much cheaper the text's repeated stretches were the second time.

    Token t repeats if the pair (ids[t-1], ids[t]) came earlier; losses[t - 1] is its loss (as
    token_losses gives them). Compares those tokens' losses with their earlier occurrences'."""
    first_at: dict[tuple[int, int], int] = {}
    again, before = [], []
    for t in range(1, len(ids)):
        pair = (ids[t - 1], ids[t])
        if pair in first_at:
            again.append(losses[t - 1])
            before.append(losses[first_at[pair] - 1])
        else:
            first_at[pair] = t
    if not again:
        return None
    return {"tokens": len(again), "first_time": sum(before) / len(before), "again": sum(again) / len(again)}


def head_probe(model: CausalLM, enc: Encoder | None = None, start: int | None = EOT_ID) -> list[list[int]]:
    """repeated_tokens in the model's own tokens (GPT-2's by default), as long as its context allows (40
    words for any GPT-2)."""
    return repeated_tokens(length=min(40, (model.config.n_ctx - 1) // 2), enc=enc, start=start)


def ranked_heads(scores: HeadScores) -> list[dict]:
    """Every head with its three scores, most induction-like first."""
    L, H = scores.induction.shape
    rows = [{"layer": i, "head": h, "previous_token": float(scores.previous_token[i, h]),
             "induction": float(scores.induction[i, h]), "first_token": float(scores.first_token[i, h])}
            for i in range(L) for h in range(H)]
    return sorted(rows, key=lambda r: r["induction"], reverse=True)


def best_head(scores: torch.Tensor) -> dict:
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    return {"head": f"{layer}.{head}", "score": round(float(scores[layer, head]), 3)}


def measure(model: CausalLM, enc: Encoder | None = None, start: int = EOT_ID) -> dict:
    """The three probes, in the model's own tokens (GPT-2's by default) after its start token."""
    enc = enc or gpt2_encoding()
    was_training = model.training
    model.eval()
    heads = head_scores(model, head_probe(model, enc, start))
    out = {**repeated_words(model, enc, start=start), **invented_names(model, enc, start),
           "previous_token_head": best_head(heads.previous_token),
           "induction_head": best_head(heads.induction),
           "first_token_head": best_head(heads.first_token)}
    model.train(was_training)
    return out


def main(argv: list[str] | None = None) -> None:
    from model.loading import load_model

    p = argparse.ArgumentParser(prog="python -m model.probes.incontext", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a checkpoint directory, a .gguf file, smollm2 or a Hugging Face hub name")
    args = p.parse_args(argv)
    loaded = load_model(args.checkpoint)
    tok = loaded.tokenizer
    print(json.dumps(measure(loaded.model, tok, EOT_ID if tok.start_id is None else tok.start_id), indent=2))


if __name__ == "__main__":
    main()
