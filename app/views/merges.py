"""The Tokenizer page's merge story at one step: the symbols each piece of the text holds after k merges, and the
merge that step made. templates/partials/_bpe.html draws it; each button, the slider and Play ask the server for
the step they lead to (app/pages/tokenizer.py), so the story's state is the step number alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.schemas import answers as an

# what a control asks for: "tick" is Play's own next step, which keeps playing until the last merge
Move = Literal["first", "back", "step", "last", "play", "pause", "tick"]


@dataclass(frozen=True)
class Symbol:
    id: int
    text: str
    new: bool  # made by this step's merge


@dataclass(frozen=True)
class Story:
    history: an.BpeResponse
    step: int
    playing: bool
    words: list[list[Symbol]]

    @property
    def last(self) -> int:
        return len(self.history.steps)

    @property
    def merge(self) -> an.MergeStep | None:
        return self.history.steps[self.step - 1] if self.step else None

    @property
    def units(self) -> int:
        return sum(len(w) for w in self.history.initial)


def moved(step: int, last: int, move: Move | None) -> tuple[int, bool]:
    """The step a control leads to from `step`, and whether the story plays on from there."""
    if move == "play":
        return (0 if step >= last else step), True
    to = {"first": 0, "back": step - 1, "step": step + 1, "last": last, "tick": step + 1}.get(move or "", step)
    to = max(0, min(last, to))
    return to, move == "tick" and to < last


def story(history: an.BpeResponse, step: int, playing: bool = False) -> Story:
    k = max(0, min(len(history.steps), step))
    text = {p.id: p.text for p in history.pieces}
    words = [list(w) for w in history.initial]
    for merge in history.steps[:k]:
        for change in merge.changes:
            words[change.pretoken] = change.symbols
    changed = {c.pretoken for c in history.steps[k - 1].changes} if k else set()
    merged = history.steps[k - 1].token_id if k else None
    return Story(history, k, playing and k < len(history.steps),
                 [[Symbol(i, text[i], w in changed and i == merged) for i in ids] for w, ids in enumerate(words)])
