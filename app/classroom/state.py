"""A class session's state as plain dataclasses, and the pure logic of its rounds.

A session is the teacher's stepper (prompt, steps, settings, the text's pieces), the round
now open (if any), the rounds played, the leaderboard switch and the students. Guesses of
the open round live in the store beside the session (app/classroom/store.py), one per
student, so a guess never rewrites the session.

The class as a language model: for each revealed round, the class's probability of the
actual token is its share of the guesses, smoothed as (count + 1/V) / (n + 1) (as if one
more student had guessed uniformly over the V tokens), so a token nobody guessed costs a
large but finite −ln p. The class's loss and the model's are means of −ln p over rounds.

Events sent to followers say what changed and carry the counts; each view then asks for itself
again (a phone's view and the teacher's panel are rendered by the server), and each connection's
first event is the present, so a phone that missed events, joined late or reconnected lands there.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Literal

Mode = Literal["typed", "choices"]
MODES: tuple[Mode, ...] = ("typed", "choices")
MAX_GUESS_CHARS = 40  # a guess is one token: the longest GPT-2 token is far shorter
MAX_NICKNAME_CHARS = 24
ZWJ = "\u200d"
POINTS = (3, 2, 1)  # a guess that was the token itself, the model's top choice, in its top five


class GuessError(ValueError):
    """A guess that cannot be a token; the message says what to type instead."""


@dataclass
class Option:
    """A token as a round shows it: its id, its text and, where known, the model's probability and rank."""
    id: int
    text: str
    prob: float = 0.0
    rank: int = 0


@dataclass
class Bar:
    """One token of the class's histogram after a reveal: how many guessed it and what the model gave it."""
    id: int
    text: str
    count: int
    prob: float
    rank: int


@dataclass
class Round:
    """The round now open: its number, mode, the options shown (choices mode) and the model's top candidates."""
    no: int
    mode: Mode
    options: list[Option] = field(default_factory=list)
    top: list[Option] = field(default_factory=list)
    chosen: int | None = None  # the token drawn when the round opened; the phones are never sent it
    drawn_with: str = ""  # the settings it was drawn with


@dataclass
class Played:
    """A revealed round: the token appended, the model's probability of it, and the class's guesses."""
    no: int
    mode: Mode
    token: Option
    histogram: list[Bar]
    guesses: int
    class_prob: float
    top: list[Option] = field(default_factory=list)

    @property
    def class_loss(self) -> float:
        return -math.log(self.class_prob)

    @property
    def model_loss(self) -> float:
        return -math.log(max(self.token.prob, 1e-12))


@dataclass
class Student:
    nickname: str
    joined: float  # when the student's latest connection opened (a reconnect refreshes it)


@dataclass
class Stepper:
    """The teacher's Inference stepper as its form holds it (app/views/stepper.py)."""
    prompt: str = ""
    steps: str = ""
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 42
    n: int = 10
    url: str = "/inference"
    pieces: list[str] = field(default_factory=list)  # the prompt, then each chosen token's text


@dataclass
class Session:
    code: str
    secret_hash: str
    created: float
    active: float  # last write; the session expires after a stretch of inactivity
    stepper: Stepper = field(default_factory=Stepper)
    round: Round | None = None
    rounds_opened: int = 0
    played: list[Played] = field(default_factory=list)
    leaderboard: bool = False
    scores: dict[str, int] = field(default_factory=dict)  # student id -> leaderboard points
    students: dict[str, Student] = field(default_factory=dict)  # filled by the store's get(); save() ignores it

    def to_json(self) -> str:
        """The session without its students (the store keeps those apart), as one JSON text."""
        data = asdict(self)
        del data["students"]
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, students: dict[str, Student] | None = None) -> Session:
        d = json.loads(text)
        rnd = d.pop("round")
        return cls(**{**d, "stepper": Stepper(**d["stepper"]),
                      "round": None if rnd is None else Round(
                          no=rnd["no"], mode=rnd["mode"], options=[Option(**o) for o in rnd["options"]],
                          top=[Option(**o) for o in rnd["top"]], chosen=rnd.get("chosen"),
                          drawn_with=rnd.get("drawn_with", "")),
                      "played": [Played(no=p["no"], mode=p["mode"], token=Option(**p["token"]),
                                        histogram=[Bar(**b) for b in p["histogram"]], guesses=p["guesses"],
                                        class_prob=p["class_prob"], top=[Option(**o) for o in p["top"]])
                                 for p in d["played"]],
                      "students": students or {}})


def student_to_json(student: Student) -> str:
    return json.dumps(asdict(student), ensure_ascii=False)


def student_from_json(text: str) -> Student:
    return Student(**json.loads(text))


# ---------------------------------------------------------------- guesses

def check_text(text: str, what: str, limit: int) -> str:
    """A short text a student typed: refused if it is empty, too long or holds control characters."""
    if len(text) > limit:
        raise GuessError(f"That {what} is {len(text):,} characters long; keep it to {limit}.")
    # the zero-width joiner is allowed between two characters: emoji such as 👩‍🔬 are built with it
    joiners = ZWJ in text and (text.strip().startswith(ZWJ) or text.strip().endswith(ZWJ) or ZWJ * 2 in text)
    if joiners or any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and ch != ZWJ for ch in text):
        raise GuessError(f"That {what} holds control or invisible characters; type plain letters, digits or emoji.")
    return text


def clean_nickname(text: str) -> str:
    return check_text(" ".join(text.split()), "nickname", MAX_NICKNAME_CHARS)


def guess_candidates(text: str, after: str = "") -> list[str]:
    """The texts a typed guess is tried as, in order. A word that follows a word in the text is
    tried first with its leading space (" dog" is one token, the word as it joins the sentence),
    since a student types "dog"; at the start of a line, or after a space, as typed first."""
    if not text.strip():
        raise GuessError("Type a word or a piece of one before sending your guess.")
    check_text(text, "guess", MAX_GUESS_CHARS)
    if text.startswith(" "):
        return [text]
    joins_a_word = bool(after) and not after[-1].isspace() and text[0].isalnum()
    return [" " + text, text] if joins_a_word else [text, " " + text]


def match_guess(text: str, encode, after: str = "", token_bytes=None) -> int:
    """A typed guess as one token: the first of guess_candidates that is one token, else the first
    token of the first candidate. `encode(text) -> list[int]`; `after` is the text so far. With
    `token_bytes(id) -> bytes`, a first token that is only part of a character is refused: "🙂" and
    "🙃" both begin with the bytes f0 9f, and would match each other."""
    tries = guess_candidates(text, after)
    for t in tries:
        ids = encode(t)
        if len(ids) == 1:
            return ids[0]
    ids = encode(tries[0])
    if token_bytes is not None and not whole_characters(token_bytes(ids[0])):
        raise GuessError(f"“{text.strip()}” is {len(ids)} tokens for this model, and the first is only part of a "
                         "character, so it would match other emoji too; guess a word, or the start of one.")
    return ids[0]


def whole_characters(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def first_token_only(text: str, token: str) -> bool:
    """Whether a guess counted as only the first of its tokens (the student is told)."""
    return token.strip() != text.strip()


# ---------------------------------------------------------------- scoring

def histogram(guesses: dict[str, int]) -> Counter[int]:
    """Guesses (student id -> token id) counted by token."""
    return Counter(guesses.values())


def class_prob(count: int, n: int, vocab: int) -> float:
    """The class's probability of a token that `count` of `n` guesses named, smoothed: (count + 1/V) / (n + 1)."""
    return (count + 1 / vocab) / (n + 1)


def mean_loss(probs: list[float]) -> float | None:
    return sum(-math.log(max(p, 1e-12)) for p in probs) / len(probs) if probs else None


def losses(played: list[Played]) -> dict:
    """The class's and the model's mean loss over the revealed rounds, and who did better."""
    cls = mean_loss([p.class_prob for p in played])
    model = mean_loss([p.token.prob for p in played])
    better = None if cls is None else ("the class" if cls < model else "the model" if model < cls else "neither")
    return {"class": cls, "model": model, "better": better, "rounds": len(played)}


def points(guess: int, actual: int, top: list[Option]) -> int:
    """Leaderboard points for one guess: the token that came, the model's top choice, or one of its top five."""
    if guess == actual:
        return POINTS[0]
    if top and guess == top[0].id:
        return POINTS[1]
    return POINTS[2] if guess in {o.id for o in top[:5]} else 0


def leaderboard(session: Session, size: int = 10) -> list[tuple[str, int]]:
    """The best nicknames by points (students without a nickname take part but are not listed)."""
    named = [(s.nickname, session.scores.get(sid, 0)) for sid, s in session.students.items()
             if s.nickname and session.scores.get(sid, 0) > 0]
    return sorted(named, key=lambda x: (-x[1], x[0]))[:size]


# ---------------------------------------------------------------- events

def state_event(session: Session, answers: int, reason: str) -> dict:
    """What every follower is told of a change: why, and the counts; each view asks for itself again."""
    return {"type": "state", "reason": reason, "students": len(session.students), "answers": answers}


def panel_key(session: Session, answers: int) -> str:
    """What the teacher's panel shows, in a few figures (it sends them back when it asks for itself again):
    the rounds played first (one more is a reveal), the open round, the leaderboard switch, the counts."""
    rnd = session.round.no if session.round else 0
    return f"{len(session.played)}-{rnd}-{int(session.leaderboard)}-{len(session.students)}-{answers}"


def missed_reveal(seen: str, session: Session) -> bool:
    """A panel that showed fewer rounds played than the session has (its panel_key) missed a reveal."""
    return seen.partition("-")[0] in {str(n) for n in range(len(session.played))}


def phone_key(session: Session) -> str:
    """What a phone's view shows of the session, likewise: the round, the reveals, the leaderboard switch, the text."""
    text = hashlib.blake2s("\0".join(session.stepper.pieces).encode(), digest_size=6).hexdigest()
    return f"{session.round.no if session.round else 0}-{len(session.played)}-{int(session.leaderboard)}-{text}"


def counts(session: Session, answers: int) -> dict:
    return {"type": "count", "students": len(session.students), "answers": answers}
