"""A model card (model_card.json beside a checkpoint), read once at load into a typed object.

model/training/card.py writes cards; any other checkpoint may carry one written by hand, so
reading is forgiving: a field that is missing or of the wrong type stays empty, and
the pages show what there is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Source:
    """One source of training text: its share of the batches and its size."""
    name: str
    weight: float | None = None
    train_documents: int | None = None
    train_characters: int | None = None
    train_tokens: int | None = None
    val_tokens: int | None = None


@dataclass(frozen=True)
class Stage:
    """One training stage: how many steps it ran, and its mixture of sources."""
    steps: int
    weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Copying:
    """In-context copying as model/probes/incontext.py measures it (nats per token; head scores 0 to 1)."""
    first_copy: float
    second_copy: float
    name_first_use: float
    name_later_uses: float
    previous_token_head: tuple[str, float] | None = None  # ("layer.head", score)
    induction_head: tuple[str, float] | None = None


@dataclass(frozen=True)
class ModelCard:
    description: str | None = None
    training_tokens: int | None = None
    training_steps: int | None = None
    validation_loss: float | None = None  # nats per token on held-out text
    baselines: dict[str, float] = field(default_factory=dict)  # losses of trivial predictors, for scale
    corpus: tuple[Source, ...] = ()
    licences: dict[str, str] = field(default_factory=dict)
    stages: tuple[Stage, ...] = ()
    copying: Copying | None = None


def number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def whole(v: Any) -> int | None:
    n = number(v)
    return int(n) if n is not None else None


def percent(part: float, whole: float = 1.0) -> str:
    """part of whole as a whole percent, halves rounded up, alike on every page and in the card's README: shares
    are stored to 3 places, and their float sum can miss 1 by a hair that would tip 28.5% either way."""
    return f"{math.floor(round(part / whole * 100, 6) + 0.5)}%"


def parse_copying(ic: dict) -> Copying | None:
    figures = [number(ic.get(k)) for k in ("first_copy", "second_copy", "name_first_use", "name_later_uses")]
    if None in figures:
        return None

    def head(key: str) -> tuple[str, float] | None:
        h = ic.get(key)
        if isinstance(h, dict) and isinstance(h.get("head"), str) and number(h.get("score")) is not None:
            return h["head"], float(h["score"])
        return None

    return Copying(*figures, previous_token_head=head("previous_token_head"), induction_head=head("induction_head"))


def parse_card(raw: dict) -> ModelCard:
    def get(*path: str) -> Any:
        node: Any = raw
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    def table(node: Any) -> dict:
        return node if isinstance(node, dict) else {}

    corpus = tuple(
        Source(str(name), weight=number(c.get("weight")), train_documents=whole(c.get("train_documents")),
               train_characters=whole(c.get("train_characters")), train_tokens=whole(c.get("train_tokens")),
               val_tokens=whole(c.get("val_tokens")))
        for name, c in table(get("corpus")).items() if isinstance(c, dict))
    return ModelCard(
        description=d if isinstance(d := get("description"), str) else None,
        training_tokens=whole(get("training", "tokens_seen")),
        training_steps=whole(get("training", "steps")),
        validation_loss=number(get("evaluation", "tinystories_valid_loss")),
        baselines={str(k): float(v) for k, v in table(get("evaluation", "baselines")).items() if number(v) is not None},
        corpus=corpus,
        licences={str(k): str(v) for k, v in table(get("licences")).items()},
        copying=parse_copying(table(get("incontext"))),
        stages=tuple(Stage(steps, {str(k): float(v) for k, v in table(st.get("weights")).items() if number(v) is not None})
                     for st in (get("training", "stages") or []) if isinstance(st, dict)
                     and (steps := whole(st.get("steps"))) is not None),
    )
