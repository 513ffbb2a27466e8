"""A round's model work, through the engine like every other request: the candidates a round shows,
and the reveal (the token the teacher's settings choose, the model's view of every guess).

The text cannot change while a round is open, so all of it is done when the round opens: the token is
drawn then, and the process keeps the whole distribution (Outlooks), so that revealing to a class
waits for no model work however busy the model is. A process that did not open the round (several
processes behind Redis) measures again.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence

import anyio
import torch

from app.classroom.state import Bar, MODES, Mode, Option, Played, Round, Session, class_prob, histogram, points
from app.serving.engine import Engine
from app.problems import InputError
from app.views.stepper import format_steps, parse_steps, state_url
from app.views.stepping import Dice, LocalSteps, Taken, Under, take
from model.probes import analysis
from model.decode.sampling import SamplingParams

TOP = 10  # the model's candidates kept for a round: the bars beside the class's histogram
CHOICES = 4  # the model's most likely tokens among a multiple-choice round's options
DISTRACTORS = 2  # and tokens it thought unlikely, drawn from ranks DISTRACTOR_RANKS
DISTRACTOR_RANKS = (30, 300)


class RoundError(InputError):
    """A round action that cannot happen now; the message says why and what to do (409)."""

    status = 409


def dice_of(session: Session) -> Dice:
    st = session.stepper
    return Dice(temperature=st.temperature, top_k=st.top_k, top_p=st.top_p, seed=st.seed, n=st.n)


async def context_ids(engine: Engine, session: Session) -> tuple[list[int], list[Taken]]:
    """The ids the model reads now: the prompt and the steps taken."""
    st = session.stepper
    if not st.prompt:
        raise RoundError("The stepper has no prompt yet: type one on the Inference page first.")
    steps = parse_steps(st.steps, LocalSteps(engine)) or []
    return await engine.encode(st.prompt) + [int(t.token) for t in steps], steps


def readable(text: str) -> bool:
    """A distractor a student can read on a button: some letter or digit, nothing invisible."""
    return any(ch.isalnum() for ch in text) and text.isprintable()


async def distribution(engine: Engine, ids: list[int], n: int, targets: Sequence[int] = (),
                       logits: torch.Tensor | None = None) -> dict:
    """The model's own distribution after ids (no warpers): its top n and each target's probability and rank.
    With the logits already measured, no model work: the thread pool ranks them."""
    if logits is None:
        return await engine.run(analysis.next_token, engine.loaded.model, ids, SamplingParams(), n, list(targets))
    return await anyio.to_thread.run_sync(analysis.distribution, logits, SamplingParams(), n, list(targets))


class Outlooks:
    """The logits after each open round's text, kept by the process that opened the round (a few at most:
    one per session, the oldest forgotten first)."""

    def __init__(self, size: int):
        self.size = size
        self.kept: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()

    def put(self, code: str, no: int, logits: torch.Tensor) -> None:
        self.kept[(code, no)] = logits
        while len(self.kept) > self.size:
            self.kept.popitem(last=False)

    def pop(self, code: str, no: int) -> torch.Tensor | None:
        return self.kept.pop((code, no), None)


def drawn_with(dice: Dice) -> str:
    """The settings a round's token was drawn with: a reveal under other settings draws again."""
    return f"{dice.temperature:g}/{dice.top_k}/{dice.top_p:g}/{dice.seed}"


def option(engine: Engine, c: dict) -> Option:
    return Option(id=c["id"], text=engine.texts[c["id"]], prob=c["prob"], rank=c.get("rank", 0))


async def open_round(engine: Engine, session: Session, mode: str, rng: random.Random,
                     outlooks: Outlooks) -> Round:
    """The next round: the model's top candidates, for a multiple-choice round the shuffled options, and the
    token the teacher's settings draw (as the stepper's "sample" does), kept until the reveal."""
    if mode not in MODES:
        raise InputError(f"A round is typed or multiple choice (mode {' or '.join(MODES)}), not {mode[:20]!r}.")
    ids, steps = await context_ids(engine, session)
    if len(ids) >= engine.info().n_ctx:
        raise RoundError("The text fills the model's whole context: undo or start over before opening a round.")
    dice = dice_of(session)
    chosen = await take(engine, ids, dice, "sample", None, dice.seed + len(steps))
    if isinstance(chosen, str):
        raise RoundError(chosen)
    logits = await engine.run(analysis.next_logits, engine.loaded.model, ids)
    dist = await distribution(engine, ids, DISTRACTOR_RANKS[1], logits=logits)
    ranked = [dict(c, rank=i + 1) for i, c in enumerate(dist["before"]) if c["id"] != engine.eos_id]
    top = [option(engine, c) for c in ranked[:TOP]]
    options: list[Option] = []
    if mode == "choices":
        pool = [c for c in ranked[DISTRACTOR_RANKS[0]:] if readable(engine.texts[c["id"]])]
        options = top[:CHOICES] + [option(engine, c) for c in rng.sample(pool, min(DISTRACTORS, len(pool)))]
        rng.shuffle(options)
        options = [Option(id=o.id, text=o.text) for o in options]  # the phones are not told the model's view
    no = session.rounds_opened + 1
    outlooks.put(session.code, no, logits)
    return Round(no=no, mode=_mode(mode), options=options, top=top, chosen=chosen, drawn_with=drawn_with(dice))


def _mode(mode: str) -> Mode:
    return "typed" if mode == "typed" else "choices"


async def reveal(engine: Engine, session: Session, guesses: dict[str, int], logits: torch.Tensor | None) -> Played:
    """Close the open round: the teacher's settings choose the token (as the stepper's "sample" does), the
    model's distribution is measured at every guessed token, and the stepper gains the step."""
    rnd = session.round
    if rnd is None:
        raise RoundError("No round is open: open one first.")
    ids, steps = await context_ids(engine, session)
    dice = dice_of(session)
    chosen: int | str | None = rnd.chosen if rnd.drawn_with == drawn_with(dice) else None
    if chosen is None:
        chosen = await take(engine, ids, dice, "sample", None, dice.seed + len(steps))
    if isinstance(chosen, str):
        raise RoundError(chosen)
    counts = histogram(guesses)
    dist = await distribution(engine, ids, TOP, sorted({*counts, chosen}), logits)
    seen = {t["id"]: t for t in dist["targets"]}
    bars = sorted((Bar(id=i, text=engine.texts[i], count=n, prob=seen[i]["prob"], rank=seen[i]["rank"])
                   for i, n in counts.items()), key=lambda b: (-b.count, -b.prob))
    token = option(engine, seen[chosen])
    top = [option(engine, dict(c, rank=i + 1)) for i, c in enumerate(dist["before"])]
    played = Played(no=rnd.no, mode=rnd.mode, token=token, histogram=bars, guesses=len(guesses),
                    class_prob=class_prob(counts.get(chosen, 0), len(guesses), engine.info().vocab_size), top=top)
    for student, guess in guesses.items():
        session.scores[student] = session.scores.get(student, 0) + points(guess, chosen, top)
    st = session.stepper
    steps = [*steps, Taken("s", chosen, Under.now(dice, dice.seed + len(steps)))]  # its settings, as a page step
    st.steps, st.pieces = format_steps(steps, LocalSteps(engine)), [*st.pieces, token.text]
    st.url = state_url(st.prompt, st.steps, dice)
    session.played.append(played)
    session.round = None
    return played
