"""Does a model learn from its prompt? Three measurements of in-context copying.

    python -m model.incontext CHECKPOINT      (any GPT-2 checkpoint, e.g. real GPT-2 to compare)

- repeated words: 20 random common words, then the same 20 again. A model that reads its
  context predicts the second copy; one that does not pays as much as for the first.
  The second copy is scored from its second word on: its first word follows the
  twentieth, which nothing earlier was followed by, so no copying can predict it.
- invented names: short stories that introduce a name never seen in training
  (augment.RESERVED_NAMES) and use it again; the loss per token of its later uses.
- heads: on random tokens repeated once, each head's mean attention on the previous
  token (a previous-token head), on the token after the current token's earlier
  occurrence (an induction head), and on the first token (an "attention sink").

Every probe is fixed (seeded), so figures are comparable across checkpoints.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import tiktoken

from model.augment import RESERVED_NAMES
from model.gpt2 import GPT
from model.record import Recorder
from model.tokenizer import EOT_ID, gpt2_encoding

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


@dataclass
class HeadScores:
    previous_token: torch.Tensor  # (L, H)
    induction: torch.Tensor       # (L, H)
    first_token: torch.Tensor     # (L, H)


def common_word_ids(enc: tiktoken.Encoding) -> list[int]:
    """COMMON_WORDS that are one token with their leading space, as ids."""
    ids = [enc.encode_ordinary(" " + w) for w in COMMON_WORDS]
    return [i[0] for i in ids if len(i) == 1]


@torch.no_grad()
def token_losses(model: GPT, ids: list[int]) -> torch.Tensor:
    """Loss (nats) of each token given those before it; entry t is the loss of ids[t + 1]."""
    x = torch.tensor(ids, device=model.wte.weight.device)[None]
    logits = model(x[:, :-1]).float()
    return F.cross_entropy(logits[0], x[0, 1:], reduction="none").cpu()


def repeated_words(model: GPT, enc: tiktoken.Encoding, n_words: int = 20, trials: int = 16,
                   seed: int = 0) -> dict[str, float]:
    pool, rng = common_word_ids(enc), random.Random(seed)
    first, second, second_all = [], [], []
    for _ in range(trials):
        words = rng.sample(pool, n_words)
        losses = token_losses(model, [EOT_ID] + words + words)  # losses[t] scores token t + 1
        first.append(losses[1:n_words].mean())             # the first copy from its second word
        second.append(losses[n_words + 1:].mean())          # the second copy from its second word
        second_all.append(losses[n_words:].mean())
    mean = lambda xs: round(float(torch.stack(xs).mean()), 3)  # noqa: E731
    return {"first_copy": mean(first), "second_copy": mean(second), "second_copy_all_words": mean(second_all)}


def invented_names(model: GPT, enc: tiktoken.Encoding) -> dict[str, float]:
    """Mean loss per token of a name's later uses, after the story introduced it once."""
    later, first = [], []
    for story in NAME_STORIES:
        for name in PROBE_NAMES:
            ids = [EOT_ID] + enc.encode_ordinary(story.format(n=name))
            name_ids = enc.encode_ordinary(" " + name)
            starts = [t for t in range(len(ids)) if ids[t:t + len(name_ids)] == name_ids]
            losses = token_losses(model, ids)
            uses = [losses[s - 1:s - 1 + len(name_ids)] for s in starts]
            first.append(uses[0])
            later += uses[1:]
    return {"name_first_use": round(float(torch.cat(first).mean()), 3),
            "name_later_uses": round(float(torch.cat(later).mean()), 3)}


@torch.no_grad()
def head_scores(model: GPT, length: int = 50, trials: int = 8, seed: int = 0) -> HeadScores:
    """Scores over `trials` sequences of <|endoftext|> + `length` random tokens + the same tokens again."""
    g = torch.Generator().manual_seed(seed)
    # ids 1,000-10,000: GPT-2's frequent merges, tokens any trained model has read
    rand = torch.randint(1000, 10000, (trials, length), generator=g)
    seq = torch.cat([torch.full((trials, 1), EOT_ID), rand, rand], dim=1).to(model.wte.weight.device)
    rec = Recorder(["blocks.*.attn.pattern"])
    model(seq, rec=rec)
    T = seq.shape[1]
    t = torch.arange(1, T)
    second = torch.arange(1 + length, T)
    prev, ind, sink = [], [], []
    for i in range(model.config.n_layer):
        p = rec[f"blocks.{i}.attn.pattern"].float()            # (B, H, T, T)
        prev.append(p[:, :, t, t - 1].mean(dim=(0, 2)))
        ind.append(p[:, :, second, second - length + 1].mean(dim=(0, 2)))
        sink.append(p[:, :, t, 0].mean(dim=(0, 2)))
    return HeadScores(torch.stack(prev).cpu(), torch.stack(ind).cpu(), torch.stack(sink).cpu())


def best_head(scores: torch.Tensor) -> dict:
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    return {"head": f"{layer}.{head}", "score": round(float(scores[layer, head]), 3)}


def measure(model: GPT, enc: tiktoken.Encoding | None = None) -> dict:
    enc = enc or gpt2_encoding()
    was_training = model.training
    model.eval()
    heads = head_scores(model)
    out = {**repeated_words(model, enc), **invented_names(model, enc),
           "previous_token_head": best_head(heads.previous_token),
           "induction_head": best_head(heads.induction),
           "first_token_head": best_head(heads.first_token)}
    model.train(was_training)
    return out


def main(argv: list[str] | None = None) -> None:
    from model.loading import load_model

    p = argparse.ArgumentParser(prog="python -m model.incontext", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a checkpoint directory or Hugging Face hub name")
    args = p.parse_args(argv)
    print(json.dumps(measure(load_model(args.checkpoint).model), indent=2))


if __name__ == "__main__":
    main()
