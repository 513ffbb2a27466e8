"""Training data that can only be predicted by reading the context.

Two transformations, both listed on the model card:

- invented names: a story's character names (the words TinyStories introduces
  with "named X") are replaced by made-up names, the same one throughout the
  story, so the name can be predicted only from where the story introduced it;
- repeated spans: a row of training tokens that holds a span said twice or more,
  either random tokens (whose first copy is not scored: there is nothing to
  learn from it) or a piece of a story. The random tokens come from three pools
  (SpanPools): word-like tokens of the whole vocabulary, frequent words, and the
  pieces invented names split into, so that rare tokens are practised as copy
  targets too. The copies either tile the row or sit in natural text at random
  gaps, since copies at fixed distances teach a position shortcut rather than
  an induction head (Kawata et al. 2025).
"""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import torch

IGNORE = -100  # cross_entropy's ignore_index: targets that are not scored

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr",
           "kr", "tr", "st", "sh", "th", "ch", "pl", "fl", "qu", "j", "h", "w", "y"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou", "oo", "ia", "y"]
_CODAS = ["", "", "", "n", "r", "l", "k", "x", "th", "m", "nd", "sk", "ck", "z"]

# Names the in-context probes use (model/probes/incontext.py): never generated, so never seen in training.
RESERVED_NAMES = frozenset({"Zorbek", "Quillon", "Vesmira", "Drabnik", "Olvetta", "Prunwick",
                            "Skelmar", "Yrvanna", "Tobrixel", "Fennodor", "Glimsha", "Kaskadel"})


def invented_name(rng: random.Random) -> str:
    while True:
        syllables = rng.choice((2, 2, 2, 3))
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        name = name.capitalize()
        if 4 <= len(name) <= 10 and name not in RESERVED_NAMES:
            return name


def character_names(docs: list[str], min_count: int = 3) -> set[str]:
    """Words introduced as "named X" at least min_count times that the text capitalises far more often
    than not (which keeps "Lily" and drops a word that is mostly a plain noun elsewhere)."""
    named = Counter(re.findall(r"\bnamed ([A-Z][a-z]+)\b", "\n".join(docs)))
    words = Counter(re.findall(r"\b[A-Za-z]+\b", "\n".join(docs)))
    return {n for n, c in named.items()
            if c >= min_count and n != "Mr" and words[n] > 2 * words[n.lower()]}


def invent_names(doc: str, names: set[str], rng: random.Random, used: set[str] | None = None,
                 min_uses: int = 1) -> str:
    """The story with each of its character names used at least min_uses times replaced by one invented
    name, consistently. Names in `used` are never drawn, and the drawn ones are added to it: a name
    reused across stories would be memorised in the weights instead of read from the story."""
    present = [n for n in names if len(re.findall(rf"\b{n}\b", doc)) >= min_uses]
    if not present:
        return doc
    new = {}
    for n in sorted(present):
        while (m := invented_name(rng)) in new.values() or (used is not None and m in used):
            pass
        new[n] = m
        if used is not None:
            used.add(m)
    return re.sub(r"\b(" + "|".join(map(re.escape, sorted(present, key=len, reverse=True))) + r")\b",
                  lambda m: new[m.group(1)], doc)


def frequent_tokens(streams: list[np.ndarray], n: int = 3000, exclude: int | None = None) -> np.ndarray:
    """The n most frequent token ids over the streams (the pool random spans draw from)."""
    counts = sum(np.bincount(np.asarray(s, dtype=np.int64), minlength=50257) for s in streams)
    if exclude is not None:
        counts[exclude] = 0
    return np.argsort(-counts, kind="stable")[:n]


def word_like_tokens(enc) -> np.ndarray:
    """Every token id whose text is letters only, with or without one leading space: the vocabulary a
    copied span can hold beyond the frequent words (a standard induction probe draws from it too)."""
    word = re.compile(r" ?[A-Za-z]+")
    return np.array([i for i in range(enc.n_vocab - 1) if word.fullmatch(enc.decode_single_token_bytes(i)
                                                                         .decode("utf-8", "replace"))])


class SpanPools:
    """Where random spans draw their tokens: per span, uniform word-like tokens of the whole vocabulary
    (shares[0]), frequent tokens of the training text (shares[1]), or invented names in pieces (shares[2])."""

    def __init__(self, frequent: np.ndarray, enc, shares: tuple[float, float, float] = (0.4, 0.3, 0.3)):
        self.frequent, self.words, self.enc = frequent, word_like_tokens(enc), enc
        self.shares = torch.tensor(shares, dtype=torch.float64)

    def span(self, n: int, g: torch.Generator) -> torch.Tensor:
        kind = int(torch.multinomial(self.shares, 1, generator=g))
        if kind < 2:
            pool = self.words if kind == 0 else self.frequent
            return torch.from_numpy(pool[torch.randint(0, len(pool), (n,), generator=g).numpy()].astype(np.int64))
        rng = random.Random(int(torch.randint(0, 2**31, (), generator=g)))
        ids: list[int] = []
        while len(ids) < n:  # a run of names, each with its leading space, as a story would say them
            ids += self.enc.encode_ordinary(" " + invented_name(rng))
        return torch.tensor(ids[:n], dtype=torch.int64)


def spans_in_text(length: int, g: torch.Generator, pools: SpanPools, text: np.ndarray,
                  min_span: int = 4, max_span: int = 64, max_repeats: int = 8,
                  embed: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """One (x, y) row of `length` tokens holding a random span 2 to max_repeats times (the first copy
    not scored). With probability `embed` the copies sit in a window of natural text at random gaps;
    otherwise they follow one another, and natural text fills what they leave of the row."""
    span = int(torch.randint(min_span, max_span + 1, (), generator=g))
    fits = max(2, min(max_repeats, (length + 1) // span))
    repeats = int(torch.randint(2, fits + 1, (), generator=g))
    piece = pools.span(span, g)
    room = max(0, length + 1 - span * repeats)
    if float(torch.rand((), generator=g)) < embed and room:
        cuts = torch.sort(torch.randint(0, room + 1, (repeats + 1,), generator=g)).values.tolist()
        gaps = [b - a for a, b in zip([0] + cuts, cuts + [room])]
    else:
        lead = int(torch.randint(0, room + 1, (), generator=g))
        gaps = [lead] + [0] * (repeats - 1) + [room - lead]
    start = int(torch.randint(0, len(text) - room - 1, (), generator=g))
    natural = torch.from_numpy(text[start:start + room].astype(np.int64))
    parts, masks, used = [], [], 0
    for k, gap in enumerate(gaps):
        parts.append(natural[used:used + gap])
        masks.append(torch.zeros(gap, dtype=torch.bool))
        used += gap
        if k < repeats:
            parts.append(piece)
            masks.append(torch.full((span,), k == 0))  # the first copy cannot be predicted
    row, ignore = torch.cat(parts)[:length + 1], torch.cat(masks)[:length + 1]
    x, y = row[:-1].clone(), row[1:].clone()
    y[ignore[1:]] = IGNORE
    return x, y


def repeated_row(length: int, g: torch.Generator, text: np.ndarray,
                 min_span: int = 8, max_span: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """One (x, y) row of `length` tokens: a piece of the token stream `text` repeated to fill it, every
    target scored."""
    span = int(torch.randint(min_span, max_span + 1, (), generator=g))
    start = int(torch.randint(0, len(text) - span, (), generator=g))
    piece = torch.from_numpy(text[start:start + span].astype(np.int64))
    row = piece.repeat(length // span + 2)[:length + 1]
    return row[:-1].clone(), row[1:].clone()
