"""What the pages may say about copying from the prompt: one source of figures for the Overview, the Internals
hint beside the head finder, the Training page's note on a repeated stretch, and the Playground.

Two kinds of figure, each sentence naming the one it quotes: the model card's losses (model/probes/incontext.py's
probes of repeated words and invented names, measured when the card was written), and every head's scores on
the head finder's own probe (random words said twice), measured live on the loaded weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.demo import LARGE, copies
from app.serving.engine import Engine
from model.model_card import Copying

CLEAR = 0.5  # a head with at least this share of its attention where its kind looks "clearly" does that job
READS_LINES = 0.5  # a repeated line that costs at most this share of its first time was read, not guessed


@dataclass(frozen=True)
class CopyingFacts:
    card: Copying | None  # the card's losses; None where the model has no measured card
    heads: list[dict]     # every head's scores on the finder's probe (incontext.ranked_heads); [] where none
    parameters: int

    @property
    def lines(self) -> bool:
        """Whether a line said again costs clearly less than the first time (a large model without a card does)."""
        return self.card.second_copy <= READS_LINES * self.card.first_copy if self.card else self.parameters >= LARGE

    @property
    def names(self) -> bool:
        """Whether an invented name it has just read is cheap when it comes back."""
        return copies(self.card, self.parameters)

    def best(self, kind: str) -> dict | None:
        """The head with the highest score of this kind on the finder's probe."""
        return max(self.heads, key=lambda r: r[kind]) if self.heads else None

    @property
    def induction(self) -> dict | None:
        """The induction head that clearly does the job on the finder's probe, if one does."""
        best = self.best("induction")
        return best if best and best["induction"] >= CLEAR else None


async def facts(engine: Engine) -> CopyingFacts:
    card = engine.loaded.card
    return CopyingFacts(card.copying if card else None, await engine.probe_heads(), engine.info().parameters["total"])
