"""From logits to a chosen token: temperature -> top-k -> top-p -> greedy or a seeded draw.

Each warper is a small function over the last dimension, so the same chain
serves one stream (V,) and a batch (B, V). `sample_step` also returns the
distribution before and after the warpers, so a page can show why a token won.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0            # 0 means no top-k cut
    top_p: float = 1.0        # 1 means no nucleus cut

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number ≥ 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0 (0 turns it off), got {self.top_k}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by T: below 1 sharpens, above 1 flattens. T = 0 is handled as greedy by the caller."""
    return logits / temperature if temperature not in (0, 1) else logits


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits (ties at the k-th value are kept too)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p."""
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # drop a token when the tokens before it already reach p; the top token always stays
    drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The full chain; at temperature 0 only the argmax survives."""
    logits = logits.float()
    if params.greedy:
        top = logits.argmax(dim=-1, keepdim=True)
        return torch.full_like(logits, float("-inf")).scatter(-1, top, 0.0)
    logits = apply_temperature(logits, params.temperature)
    logits = apply_top_k(logits, params.top_k)
    return apply_top_p(logits, params.top_p)


def choose(warped: torch.Tensor, generator: torch.Generator | None, greedy: bool) -> torch.Tensor:
    """Pick token ids from warped logits: argmax when greedy, else one seeded draw per row."""
    if greedy:
        return warped.argmax(dim=-1)
    probs = warped.softmax(dim=-1)
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).reshape(probs.shape[:-1])


@dataclass
class Candidate:
    id: int
    prob: float
    logit: float


@dataclass
class Step:
    id: int                # the chosen token
    prob: float            # its probability after the warpers (what the dice used)
    raw_prob: float        # its probability under the model's own distribution
    before: list[Candidate]  # top-N of the model's distribution (logits as the model gave them)
    after: list[Candidate]   # top-N after temperature / top-k / top-p (warped logits)
    entropy: float         # of the model's own distribution, in nats
    support: int           # how many tokens the warpers left possible


def top_n(logits: torch.Tensor, probs: torch.Tensor, n: int) -> list[Candidate]:
    p, ids = torch.topk(probs, min(n, probs.shape[-1]))
    return [Candidate(int(i), float(q), float(logits[i])) for i, q in zip(ids, p) if q > 0]


def entropy(logits: torch.Tensor) -> float:
    logp = logits.float().log_softmax(dim=-1)
    return float(-(logp.exp() * logp).nan_to_num().sum())


def sample_step(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None,
                n: int = 10, forced: int | None = None) -> Step:
    """One decision from a single position's logits (V,). `forced` takes that token instead of sampling."""
    logits = logits.float()
    raw = logits.softmax(dim=-1)
    warped = warp(logits, params)
    after = warped.softmax(dim=-1)
    token = int(choose(warped, generator, params.greedy)) if forced is None else forced
    return Step(
        id=token,
        prob=float(after[token]),
        raw_prob=float(raw[token]),
        before=top_n(logits, raw, n),
        after=top_n(warped, after, n),
        entropy=entropy(logits),
        support=int(torch.isfinite(warped).sum()),
    )


class Utf8Stream:
    """Turns token bytes into text without ever emitting half a character.

    Bytes that end mid-character are held back until the rest arrives; bytes
    that can never form a character become U+FFFD, as in the final decode.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
