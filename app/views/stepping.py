"""What the Inference stepper (app/views/stepper.py) asks of a model, one class per way a model is reached.

A step's token is a key the model mints: its id for a model loaded here, its text for a model on a serving
engine, which knows tokens only by their text. Each class writes its keys in a link, chooses a token for an
action (sample, the most likely, a bar picked by hand), and shows the next token's bars and each step's
chance; the stepper itself never asks which kind of model it holds.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.views import ablation
from app.schemas import answers as an, requests as rq
from app.serving.engine import Engine
from app.problems import InputError
from model.probes.interventions import Patch
from model.decode.sampling import SamplingParams, draw_one, warp_probs

HOW = {"s": "sampled", "g": "the most likely", "h": "chosen by hand"}
ACTIONS = {"greedy": "g", "sample": "s", "pick": "h"}
PATCH = re.compile(r"(\d{1,4})\.(\d{1,5})")  # a patch in a link: "3.5", block 3, token 5


@dataclass
class Dice:
    temperature: float
    top_k: int
    top_p: float
    seed: int
    n: int

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


@dataclass(frozen=True)
class Under:
    """The settings a step was taken under, and a sample's seed: what its chance was computed with then."""

    temperature: float
    top_k: int
    top_p: float
    seed: int | None = None  # the seed of the draw; None for a step that drew nothing

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)

    @classmethod
    def now(cls, dice: Dice, seed: int | None) -> Under:
        # hundredths, as the link writes them: the step shows the chance its link will show
        return cls(round(dice.temperature, 2), dice.top_k, round(dice.top_p, 2), seed)

    def code(self) -> str:
        return (f"t{round(self.temperature * 100)}" + (f"k{self.top_k}" if self.top_k else "")
                + (f"p{round(self.top_p * 100)}" if self.top_p < 1 else "")
                + (f"r{self.seed}" if self.seed is not None else ""))

    def words(self) -> str:
        """"temperature 0.7, top-k 20": the settings as the controls name them."""
        return ", ".join([f"temperature {self.temperature:g}", *([f"top-k {self.top_k}"] if self.top_k else []),
                          *([f"top-p {self.top_p:g}"] if self.top_p < 1 else [])])


@dataclass
class Taken:
    how: str          # a key of HOW
    token: int | str  # the key the model minted: a token id, or a model server's token text
    # the settings it was taken under; None for a step written without them (links made before steps kept
    # theirs, a class round's step), which shows the page's settings
    under: Under | None = None


@dataclass(frozen=True)
class Changes:
    """What a stepper link changes in the model, as the URL spells it: parts switched off, and one patch."""

    off: str = ""
    patch: str = ""  # "3.5": block 3, token 5
    clean: str = ""  # the prompt the patch copies from

    def query(self) -> dict[str, str | None]:
        return {"off": self.off or None, "patch": self.patch or None, "clean": self.clean if self.patch else None}


NONE = Changes()


class Refused(Exception):
    """No token joins the text for this action; the message says why and what to do."""


class Steps(Protocol):
    """A model as the stepper reaches it, for one prompt (begin() reads it first)."""

    pattern: str       # a token's key in a link (a regular expression)
    sep: str           # between a key and the settings it was taken under, in a link
    max_steps: int     # steps a link may hold
    changes: Changes   # what the link changes in the model (nothing, for a model without weights here)

    def read(self, written: str) -> int | str | None: ...
    def write(self, token: int | str) -> str: ...
    def text(self, token: int | str) -> str: ...
    def joined(self, tokens: Sequence[int | str]) -> str: ...
    async def begin(self, prompt: str) -> None: ...
    def fits(self, n: int) -> bool: ...
    async def choose(self, tokens: list, dice: Dice, action: str, pick: int | None, seed: int) -> int | str: ...
    async def show(self, tokens: list, unders: list[Under | None], dice: Dice) -> dict: ...


def cut_reason(rank: int, dice: Dice) -> str:
    if dice.temperature == 0:
        return "temperature 0 keeps only the top one"
    if dice.top_k > 0 and rank > dice.top_k:
        return "cut by top-k"
    return "cut by top-p"


def rest(covered: float) -> float:
    return 0.0 if covered > 1 - 1e-6 else 1 - covered  # no float dust


def bars_of(dist: an.NextTokenResponse, dice: Dice, vocab: int) -> dict:
    """The bars: each of the model's top tokens with its chance now, and the rest of the vocabulary."""
    used = {c.id: c.prob for c in dist.after}
    rows = [{"rank": i + 1, "id": c.id, "text": c.text, "model": c.prob, "now": used.get(c.id, 0.0),
             "cut": None if c.id in used else cut_reason(i + 1, dice)} for i, c in enumerate(dist.before)]
    return {"rows": rows, "others": vocab - len(rows), "rest_now": rest(sum(r["now"] for r in rows)),
            "rest_model": rest(dist.mass)}


# ---------------------------------------------------------------- a model loaded here: tokens by id

async def sample(engine: Engine, ids: list[int], dice: Dice, seed: int) -> int | str:
    """One token drawn by the generation machinery (seeded, as the Playground draws), or why none was."""
    gen = await engine.generate(ids, 1, dice.params, seed=seed, n_top=0)
    token, reason = None, "length"
    async for event in gen:
        if isinstance(event, an.TokenEvent):
            token = event.id
        else:
            reason = event.finish_reason
            if event.message:
                raise InputError(event.message)
    return token if token is not None else reason


async def take(engine: Engine, ids: list[int], dice: Dice, action: str, pick: int | None, seed: int,
               off: list[rq.InterventionIn] | None = None, patch: Patch | None = None) -> int | str:
    """The token an action chooses to follow ids (with the parts `off` switched off and `patch` written in), or a
    sentence saying why none joins the text."""
    if action == "greedy":
        req = rq.NextTokenRequest(ids=ids, n=1, interventions=off or [])
        chosen: int | str = (await engine.next_token(req, patch)).before[0].id
    elif action == "sample" and (off or patch):
        chosen = await engine.draw(ids, dice.params, seed, off or [], patch)
    elif action == "sample":
        chosen = await sample(engine, ids, dice, seed)
    else:
        chosen = pick if pick is not None and 0 <= pick < engine.info().vocab_size else "invalid"
    if chosen == engine.eos_id or chosen == "eos":
        return (f"The model chose {engine.texts[engine.eos_id]}: it thinks the text is finished. Undo, change the "
                "seed, or start over.")
    if chosen == "invalid":
        return "That is not a token of this model's vocabulary."
    return chosen


def switched_off(engine: Engine, off: str) -> list[rq.InterventionIn]:
    """The parts an off field switches off, checked against the model; InputError says what is wrong."""
    ivs = ablation.parse_off(off)
    if ivs is None:
        raise InputError("The switched-off parts in this link could not be read: remove off= from the address, "
                         "or set them again on the Internals page")
    engine.interventions(ivs)
    return ivs


async def patched(engine: Engine, changes: Changes, tokens: int) -> Patch | None:
    """The patch a link names for a prompt of `tokens` tokens; InputError says what is wrong with it."""
    if not changes.patch:
        return None
    m = PATCH.fullmatch(changes.patch.strip())
    if not m:
        raise InputError("The patch in this link could not be read: it names a block and a token, like patch=3.5; "
                         "remove patch= from the address, or click a cell of the patching grid on the Internals page")
    return await engine.stream_patch(changes.clean, int(m[1]), int(m[2]), tokens)


class LocalSteps:
    """A model loaded here: a step is a token id ("g318t100"), and a link may switch parts off or patch one."""

    pattern, sep = r"\d{1,6}", ""
    max_steps = 1 << 20  # the context bounds it (and the field's length)

    def __init__(self, engine: Engine, changes: Changes = NONE):
        self.engine = engine
        self.changes = changes
        self.prompt_ids: list[int] = []
        self.ivs: list[rq.InterventionIn] = []
        self.patch: Patch | None = None

    def read(self, written: str) -> int | None:
        # never the end-of-text token, which ends the text rather than joining it
        i = int(written)
        return i if i < self.engine.info().vocab_size and i != self.engine.eos_id else None

    def write(self, token: int | str) -> str:
        return str(token)

    def text(self, token: int | str) -> str:
        return self.engine.texts[int(token)]

    def joined(self, tokens: Sequence[int | str]) -> str:
        return self.engine.decode([int(t) for t in tokens])

    async def begin(self, prompt: str) -> None:
        self.ivs = switched_off(self.engine, self.changes.off)
        self.prompt_ids = await self.engine.encode(prompt)
        self.patch = await patched(self.engine, self.changes, len(self.prompt_ids))

    def fits(self, n: int) -> bool:
        return len(self.prompt_ids) + n <= self.engine.info().n_ctx

    async def choose(self, tokens: list, dice: Dice, action: str, pick: int | None, seed: int) -> int:
        n_ctx = self.engine.info().n_ctx
        if len(self.prompt_ids) + len(tokens) >= n_ctx:
            raise Refused(f"The text fills the model's whole context of {n_ctx:,} tokens: it cannot read any more. "
                          "Undo or start over.")
        chosen = await take(self.engine, self.prompt_ids + tokens, dice, action, pick, seed, self.ivs, self.patch)
        if isinstance(chosen, str):
            raise Refused(chosen)
        return chosen

    async def show(self, tokens: list, unders: list[Under | None], dice: Dice) -> dict:
        """The bars, each step's chance under the settings it was taken with (one pass per distinct settings,
        usually one), the distribution's figures and what the link changes."""
        engine, ids = self.engine, self.prompt_ids + tokens
        dist = await engine.next_token(rq.NextTokenRequest(ids=ids, n=dice.n, temperature=dice.temperature,
                                                          top_k=dice.top_k, top_p=dice.top_p,
                                                          interventions=self.ivs), self.patch)
        params = [u.params if u else dice.params for u in unders]
        start = len(self.prompt_ids) - 1
        by = {p: await engine.chosen(ids, start, p, self.ivs, self.patch) for p in dict.fromkeys(params)}
        patch = self.patch
        return {"dist": dist, "bars": bars_of(dist, dice, engine.info().vocab_size),
                "chances": [{"id": t, **by[p][i]} for i, (t, p) in enumerate(zip(tokens, params))],
                "off_parts": [ablation.describe(iv) for iv in self.ivs],
                "patch_on": patch and {"block": patch.block, "position": patch.position,
                                       "token": engine.texts[self.prompt_ids[patch.position]]}}


# ---------------------------------------------------------------- a model on a serving engine: tokens by text

class Server(Protocol):
    """What RemoteSteps needs of a remote source (app/serving/sources.py)."""

    name: str
    host: str
    logprobs: int

    async def next_token(self, text: str, n: int) -> list: ...


MAX_REMOTE_STEPS = 256  # each shown step asks the server for its distribution again
REMOTE_REQUESTS = 8     # of those, at most this many at once


class RemoteSteps:
    """A model on a serving engine: a step is its token's text, base64url whatever characters it holds
    ("gIHRoZQ~t100"); the server re-reads the whole text at every step, and a link changes nothing in it."""

    pattern, sep = r"[A-Za-z0-9_-]{1,800}", "~"
    max_steps = MAX_REMOTE_STEPS
    changes = NONE

    def __init__(self, server: Server):
        self.server = server
        self.prompt = ""

    def read(self, written: str) -> str | None:
        try:
            return base64.urlsafe_b64decode(written + "=" * (-len(written) % 4)).decode("utf-8")
        except ValueError:  # not base64, or not UTF-8
            return None

    def write(self, token: int | str) -> str:
        return base64.urlsafe_b64encode(str(token).encode()).decode().rstrip("=")

    def text(self, token: int | str) -> str:
        return str(token)

    def joined(self, tokens: Sequence[int | str]) -> str:
        return "".join(str(t) for t in tokens)

    async def begin(self, prompt: str) -> None:
        self.prompt = prompt

    def fits(self, n: int) -> bool:
        return True  # the server says when a text is too long

    async def candidates(self, text: str) -> list:
        return await self.server.next_token(text, self.server.logprobs)

    async def choose(self, tokens: list, dice: Dice, action: str, pick: int | None, seed: int) -> str:
        cands = await self.candidates(self.prompt + self.joined(tokens))
        if action == "greedy":
            i = 0
        elif action == "sample":
            i = draw_one(warp_probs([c.prob for c in cands], dice.params), seed)
        else:
            i = pick if pick is not None and 0 <= pick < len(cands) else -1
        if i < 0:
            raise Refused("That is not one of the tokens the model server sent: choose a bar.")
        if not cands[i].text or not cands[i].whole:
            raise Refused("That token is only part of a character, which a link cannot hold: choose another.")
        return cands[i].text

    async def show(self, tokens: list, unders: list[Under | None], dice: Dice) -> dict:
        """Each step's chance is looked up in the distribution it was chosen from: one request per step,
        together."""
        texts = [self.prompt + self.joined(tokens[:i]) for i in range(len(tokens) + 1)]
        limit = asyncio.Semaphore(REMOTE_REQUESTS)

        async def dist(text: str) -> list:
            async with limit:
                return await self.candidates(text)

        tasks = [asyncio.ensure_future(dist(t)) for t in texts]
        try:
            dists = await asyncio.gather(*tasks)
        except BaseException:  # one failed: the others stop asking
            for t in tasks:
                t.cancel()
            raise
        chances = []
        for token, under, cands in zip(tokens, unders, dists):
            now = warp_probs([c.prob for c in cands], under.params if under else dice.params)
            at = next((j for j, c in enumerate(cands) if c.text == token), None)
            chances.append({"id": None, "prob": None if at is None else now[at],
                            "raw": None if at is None else cands[at].prob})
        last = dists[-1]
        now = warp_probs([c.prob for c in last], dice.params)
        rows = [{"rank": i + 1, "id": i, "text": c.text, "model": c.prob, "now": now[i],
                 "cut": None if now[i] > 0 else cut_reason(i + 1, dice)} for i, c in enumerate(last[:dice.n])]
        server = self.server
        return {"bars": {"rows": rows, "others": None, "rest_now": rest(sum(r["now"] for r in rows)),
                         "rest_model": rest(sum(r["model"] for r in rows))},
                "chances": chances,
                "said": (f"{server.name} runs on {server.host}: it sends its {server.logprobs} most likely tokens with "
                         "the model's own probabilities, before any sampling setting, and the settings here act on "
                         "those.")}

