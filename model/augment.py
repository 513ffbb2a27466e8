"""Training data that can only be predicted by reading the context.

Two transformations, both listed on the model card:

- invented names: a story's character names (the words TinyStories introduces
  with "named X") are replaced by made-up names, the same one throughout the
  story, so the name can be predicted only from where the story introduced it;
- repeated spans: a row of training tokens that is a span said twice or more,
  either random frequent tokens (whose first copy is not scored: there is
  nothing to learn from it) or a piece of a story.
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

# Names the in-context probes use (model/incontext.py): never generated, so never seen in training.
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


def invent_names(doc: str, names: set[str], rng: random.Random) -> str:
    """The story with each of its character names replaced by one invented name, consistently."""
    present = [n for n in names if re.search(rf"\b{n}\b", doc)]
    if not present:
        return doc
    new = {}
    for n in sorted(present):
        while (m := invented_name(rng)) in new.values():
            pass
        new[n] = m
    return re.sub(r"\b(" + "|".join(map(re.escape, sorted(present, key=len, reverse=True))) + r")\b",
                  lambda m: new[m.group(1)], doc)


def frequent_tokens(streams: list[np.ndarray], n: int = 3000, exclude: int | None = None) -> np.ndarray:
    """The n most frequent token ids over the streams (the pool random spans draw from)."""
    counts = sum(np.bincount(np.asarray(s, dtype=np.int64), minlength=50257) for s in streams)
    if exclude is not None:
        counts[exclude] = 0
    return np.argsort(-counts, kind="stable")[:n]


def repeated_row(length: int, g: torch.Generator, pool: np.ndarray, text: np.ndarray | None,
                 min_span: int = 8, max_span: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """One (x, y) row of `length` tokens: a span repeated to fill it.

    With text=None the span is random tokens from pool and the first copy's targets are IGNORE;
    otherwise it is a piece of that token stream and every target is scored.
    """
    span = int(torch.randint(min_span, max_span + 1, (), generator=g))
    if text is None:
        idx = torch.randint(0, len(pool), (span,), generator=g)
        piece = torch.from_numpy(pool[idx.numpy()].astype(np.int64))
    else:
        start = int(torch.randint(0, len(text) - span, (), generator=g))
        piece = torch.from_numpy(text[start:start + span].astype(np.int64))
    row = piece.repeat(length // span + 2)[:length + 1]
    x, y = row[:-1].clone(), row[1:].clone()
    if text is None:
        y[:span - 1] = IGNORE
    return x, y
