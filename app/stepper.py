"""The Inference stepper: one token appended at a time, its state all in the URL.

The state is the prompt, the settings, the seed and the steps taken (`steps`: how each token was
chosen, its id and the settings it was chosen under, "g318t100.s464t70k20r43"), so a link restores
what the class sees, and a step's chance stays the one it had when it was taken. `off` names parts of
the model switched off (app/ablation.py, set on the Internals page), and `patch` one cell of the
patching grid there (`patch=3.5`: the `clean` prompt's residual stream entering block 3 at token 5,
written into the prompt's run): every distribution and draw is then the changed model's.

The Inference page (app/routes/inference.py) and class sessions (app/classroom) drive it.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from app import ablation
from app import schemas as s
from app.demo import DEFAULT_INFERENCE_PROMPT
from app.engine import Engine, InputError
from app.sources import MAIN, Candidate, RemoteSource, Source, Sources
from app.templating import or_message
from model.interventions import Patch
from model.sampling import SamplingParams, draw_one, warp_probs

DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 42, "n": 10}
BARS = (5, 10, 15, 20, 30)
HOW = {"s": "sampled", "g": "the most likely", "h": "chosen by hand"}
MAX_STEPS_TEXT = 4000  # characters of a steps field: far more than a context of steps
# the settings a step was taken under, after its token: temperature and top-p in hundredths (the sliders move
# by 0.05), top-k and top-p only when they cut, and a sample's seed: "t70k20p90r43"
UNDER = r"t(\d{1,3})(?:k(\d{1,2}))?(?:p(\d{1,3}))?(?:r(\d{1,7}))?"
STEP = re.compile(r"([sgh])(\d{1,6})(?:" + UNDER + ")?")


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


def under_of(t: str | None, k: str | None, p: str | None, r: str | None) -> Under | None:
    """The settings of a step's code, or None if they are outside what the controls allow."""
    if t is None:
        return None
    under = Under(int(t) / 100, int(k or 0), int(p or 100) / 100, None if r is None else int(r))
    return under if under.temperature <= 2 and under.top_k <= 50 and 0.05 <= under.top_p <= 1 else None


@dataclass
class Taken:
    how: str  # a key of HOW
    id: int
    # the settings it was taken under; None for a step written without them (links made before steps kept
    # theirs, a class round's step), which shows the page's settings
    under: Under | None = None


def parse_steps(text: str, vocab: int, eos: int | None) -> list[Taken] | None:
    """"g318t100.s464t70r43" -> the steps; None if the field is not a list of steps (a mangled link). A step is
    never the model's end-of-text token (eos: pass the engine's, eos_id), which ends the text rather than joining
    it. The settings after a step's id may be left out ("g318.s464")."""
    if not text:
        return []
    parts = [STEP.fullmatch(p) for p in text.split(".")]
    if len(text) > MAX_STEPS_TEXT or not all(parts):
        return None
    steps = [Taken(m[1], int(m[2]), under_of(*m.groups()[2:])) for m in parts]
    good = all(0 <= t.id < vocab and t.id != eos for t in steps)
    return steps if good and all((m[3] is None) == (t.under is None) for m, t in zip(parts, steps)) else None


def format_steps(steps: list[Taken]) -> str:
    return ".".join(f"{t.how}{t.id}" + (t.under.code() if t.under else "") for t in steps)


def how_taken(how: str, under: Under | None, dice: Dice, i: int) -> str:
    """"sampled, seed 43 (temperature 0.7)": a step's row in the history, under the settings it was taken with."""
    if under is None:
        return HOW[how] + (f", seed {dice.seed + i}" if how == "s" else "")
    return HOW[how] + (f", seed {under.seed}" if under.seed is not None else "") + f" ({under.words()})"


def clamp(value: float | None, default: float, lo: float, hi: float) -> float:
    return default if value is None or not math.isfinite(value) else min(hi, max(lo, value))


def dice_of(temperature: float | None, top_k: float | None, top_p: float | None, seed: float | None,
            n: float | None) -> Dice:
    """The settings as the controls allow them; anything else falls back to the default."""
    d = DEFAULTS
    bars = int(clamp(n, d["n"], 1, max(BARS)))
    return Dice(temperature=clamp(temperature, d["temperature"], 0, 2), top_k=int(clamp(top_k, d["top_k"], 0, 50)),
                top_p=clamp(top_p, d["top_p"], 0.05, 1), seed=int(clamp(seed, d["seed"], 0, 999_999)),
                n=bars if bars in BARS else d["n"])


@dataclass(frozen=True)
class Changes:
    """What a stepper link changes in the model, as the URL spells it: parts switched off, and one patch."""

    off: str = ""
    patch: str = ""  # "3.5": block 3, token 5
    clean: str = ""  # the prompt the patch copies from

    def query(self) -> dict[str, str | None]:
        return {"off": self.off or None, "patch": self.patch or None, "clean": self.clean if self.patch else None}


NONE = Changes()
PATCH = re.compile(r"(\d{1,4})\.(\d{1,5})")


def state_url(prompt: str, steps: list[Taken], dice: Dice, changes: Changes = NONE) -> str:
    """The page's URL for this state: what differs from the defaults."""
    q = {"prompt": prompt if prompt != DEFAULT_INFERENCE_PROMPT else None, "steps": format_steps(steps) or None,
         **changes.query(),
         "temperature": f"{dice.temperature:g}", "top_k": str(dice.top_k), "top_p": f"{dice.top_p:g}",
         "seed": str(dice.seed), "n": str(dice.n)}
    shown = {k: v for k, v in q.items() if v is not None and (k not in DEFAULTS or v != f"{DEFAULTS[k]:g}")}
    return "/inference" + ("?" + urlencode(shown) if shown else "")


async def sample(engine: Engine, ids: list[int], dice: Dice, seed: int) -> int | str:
    """One token drawn by the generation machinery (seeded, as the Playground draws), or why none was."""
    gen = await engine.generate(ids, 1, dice.params, seed=seed, n_top=0)
    token, reason = None, "length"
    async for event in gen:
        if isinstance(event, s.TokenEvent):
            token = event.id
        else:
            reason = event.finish_reason
            if event.message:
                raise InputError(event.message)
    return token if token is not None else reason


async def take(engine: Engine, ids: list[int], dice: Dice, action: str, pick: int | None, seed: int,
               off: list[s.InterventionIn] | None = None, patch: Patch | None = None) -> int | str:
    """The token an action chooses to follow ids (with the parts `off` switched off and `patch` written in), or a
    sentence saying why none joins the text."""
    if action == "greedy":
        req = s.NextTokenRequest(ids=ids, n=1, interventions=off or [])
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


def switched_off(engine: Engine, off: str) -> list[s.InterventionIn]:
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


async def step_context(engine: Engine, prompt: str, steps: list[Taken], dice: Dice, action: str = "",
                       pick: int | None = None, changes: Changes = NONE) -> dict:
    """Apply one action to the state and compute everything the stepper shows."""
    info = engine.info()
    notice = None
    if not prompt:
        return {"error": "Type a prompt above to see what could come next.", "kind": "info", "steps": [],
                "url": state_url(prompt, [], dice, changes)}
    ivs = switched_off(engine, changes.off)
    prompt_ids = await engine.encode(prompt)
    patch = await patched(engine, changes, len(prompt_ids))
    if len(prompt_ids) + len(steps) > info.n_ctx:
        steps, notice = [], "Those steps do not fit the model's context after this prompt: starting from the prompt."
    if action == "undo" and steps:
        steps = steps[:-1]
    elif action == "reset":
        steps = []
    elif action in ("greedy", "sample", "pick"):
        if len(prompt_ids) + len(steps) >= info.n_ctx:
            notice = (f"The text fills the model's whole context of {info.n_ctx:,} tokens: it cannot read any more. "
                      "Undo or start over.")
        else:
            seed = dice.seed + len(steps)
            chosen = await take(engine, prompt_ids + [t.id for t in steps], dice, action, pick, seed, ivs, patch)
            if isinstance(chosen, str):
                notice = chosen
            else:
                steps = [*steps, Taken({"greedy": "g", "sample": "s", "pick": "h"}[action], chosen,
                                       Under.now(dice, seed if action == "sample" else None))]
    ids = prompt_ids + [t.id for t in steps]
    dist = await engine.next_token(s.NextTokenRequest(ids=ids, n=dice.n, temperature=dice.temperature,
                                                      top_k=dice.top_k, top_p=dice.top_p, interventions=ivs),
                                  patch)
    probs = await chances(engine, ids, len(prompt_ids) - 1, steps, dice, ivs, patch)
    history = [{"n": i + 1, "text": engine.texts[t.id], "id": t.id, **p, "how": how_taken(t.how, t.under, dice, i)}
               for i, (t, p) in enumerate(zip(steps, probs))]
    return {"dist": dist, "bars": bars_of(dist, dice, info.vocab_size), "steps": steps, "history": history,
            "notice": notice, "url": state_url(prompt, steps, dice, changes), "seed_now": dice.seed + len(steps),
            "off_parts": [ablation.describe(iv) for iv in ivs],
            "patch_on": patch and {"block": patch.block, "position": patch.position,
                                   "token": engine.texts[prompt_ids[patch.position]],
                                   "without": state_url(prompt, steps, dice, Changes(changes.off))}}


async def chances(engine: Engine, ids: list[int], start: int, steps: list[Taken], dice: Dice,
                  ivs: list[s.InterventionIn] | None = None, patch: Patch | None = None) -> list[dict]:
    """Each step's chance under the settings it was taken with (one pass per distinct settings, usually one)."""
    params = [t.under.params if t.under else dice.params for t in steps]
    by = {p: await engine.chosen(ids, start, p, ivs or (), patch) for p in dict.fromkeys(params)}
    return [by[p][i] for i, p in enumerate(params)]


def cut_reason(rank: int, dice: Dice) -> str:
    if dice.temperature == 0:
        return "temperature 0 keeps only the top one"
    if dice.top_k > 0 and rank > dice.top_k:
        return "cut by top-k"
    return "cut by top-p"


def bars_of(dist: s.NextTokenResponse, dice: Dice, vocab: int) -> dict:
    """The bars: each of the model's top tokens with its chance now, and the rest of the vocabulary."""
    used = {c.id: c.prob for c in dist.after}
    rows = [{"rank": i + 1, "id": c.id, "text": c.text, "model": c.prob, "now": used.get(c.id, 0.0),
             "cut": None if c.id in used else cut_reason(i + 1, dice)} for i, c in enumerate(dist.before)]
    rest = lambda covered: 0.0 if covered > 1 - 1e-6 else 1 - covered  # noqa: E731 - no float dust
    return {"rows": rows, "others": vocab - len(rows), "rest_now": rest(sum(r["now"] for r in rows)),
            "rest_model": rest(dist.mass)}


def among(entropy: float) -> str:
    """An entropy as the number of equally likely tokens it matches."""
    n = max(1, round(math.exp(entropy)))
    return f"{n:,} token" + ("" if n == 1 else "s")


async def stepper(engine: Engine, prompt: str, steps: list[Taken], dice: Dice, action: str = "",
                  pick: int | None = None, changes: Changes = NONE) -> dict:
    """step_context, with the problems a person can fix as a message in place of the bars."""
    context = await or_message(step_context(engine, prompt, steps, dice, action, pick, changes))
    context = {"steps": steps, "history": [], "notice": None, "url": state_url(prompt, steps, dice, changes),
               "off_parts": [], "patch_on": None, **context}
    return {**context, "steps_text": format_steps(context["steps"])}


# ---------------------------------------------------------------- the models (app/sources.py)
# With a second or a remote model configured, the URL also names the model that steps (`model=`) and one to
# show beside it (`compare=`). Steps belong to one model, so another model's steps carry its key:
# "second~g318.s464" are ids of the second model's vocabulary. A remote model's tokens are known only by
# their text, so its steps keep that text (base64url, whatever characters it holds): "remote~gIHRoZQ".

SAID = re.compile(r"([sgh])([A-Za-z0-9_-]{1,800})(?:~" + UNDER + ")?")  # "~" then the settings, as for an id
MAX_REMOTE_STEPS = 256  # each shown step asks the server for its distribution again
REMOTE_REQUESTS = 8     # of those, at most this many at once


@dataclass
class Said:
    """A step taken on a remote model: how the token was chosen, and its text."""

    how: str  # a key of HOW
    text: str
    under: Under | None = None  # the settings it was taken under, as Taken's


def own_steps(text: str, key: str) -> str | None:
    """The steps field's steps if they were taken on the model `key`, else None; "" when there are none."""
    if not text:
        return ""
    if key == MAIN:
        return None if "~" in text else text
    return text.removeprefix(f"{key}~") if text.startswith(f"{key}~") else None


def parse_said(text: str) -> list[Said] | None:
    if not text:
        return []
    parts = [SAID.fullmatch(p) for p in text.split(".")]
    if len(text) > MAX_STEPS_TEXT or len(parts) > MAX_REMOTE_STEPS or not all(parts):
        return None
    try:
        said = [Said(m[1], base64.urlsafe_b64decode(m[2] + "=" * (-len(m[2]) % 4)).decode("utf-8"),
                     under_of(*m.groups()[2:])) for m in parts]
    except ValueError:  # not base64, or not UTF-8
        return None
    return said if all((m[3] is None) == (st.under is None) for m, st in zip(parts, said)) else None


def format_said(steps: list[Said]) -> str:
    return ".".join(st.how + base64.urlsafe_b64encode(st.text.encode()).decode().rstrip("=")
                    + (f"~{st.under.code()}" if st.under else "") for st in steps)


def with_models(url: str, steps_text: str, key: str, compare: str) -> str:
    """A state's URL with the models named and the steps as that model writes them."""
    path, _, query = url.partition("?")
    q = {k: v for k, v in parse_qsl(query, keep_blank_values=True) if k != "steps"}
    q |= {"steps": steps_text} if steps_text else {}
    q |= {"model": key} if key != MAIN else {}
    q |= {"compare": compare} if compare else {}
    return path + ("?" + urlencode(q) if q else "")


def remote_bars(cands: list[Candidate], dice: Dice) -> dict:
    now = warp_probs([c.prob for c in cands], dice.params)
    rows = [{"rank": i + 1, "id": i, "text": c.text, "model": c.prob, "now": now[i],
             "cut": None if now[i] > 0 else cut_reason(i + 1, dice)} for i, c in enumerate(cands[:dice.n])]
    rest = lambda covered: 0.0 if covered > 1 - 1e-6 else 1 - covered  # no float dust
    return {"rows": rows, "others": None, "rest_now": rest(sum(r["now"] for r in rows)),
            "rest_model": rest(sum(r["model"] for r in rows))}


async def remote_take(source: RemoteSource, text: str, dice: Dice, action: str, pick: int | None,
                      seed: int) -> Candidate | str:
    """The candidate an action chooses on the remote model, or a sentence saying why none joins the text."""
    cands = await source.next_token(text, source.model.logprobs)
    if action == "greedy":
        i = 0
    elif action == "sample":
        i = draw_one(warp_probs([c.prob for c in cands], dice.params), seed)
    else:
        i = pick if pick is not None and 0 <= pick < len(cands) else -1
    if i < 0:
        return "That is not one of the tokens the model server sent: choose a bar."
    if not cands[i].text or not cands[i].whole:
        return "That token is only part of a character, which a link cannot hold: choose another."
    return cands[i]


async def remote_step_context(source: RemoteSource, prompt: str, steps: list[Said], dice: Dice, action: str = "",
                              pick: int | None = None) -> dict:
    """step_context for a model on a serving engine: the server re-reads the whole text at every step."""
    if not prompt:
        return {"error": "Type a prompt above to see what could come next.", "kind": "info", "steps": []}
    notice = None
    if action == "undo" and steps:
        steps = steps[:-1]
    elif action == "reset":
        steps = []
    elif action in ("greedy", "sample", "pick"):
        seed = dice.seed + len(steps)
        chosen = await remote_take(source, prompt + "".join(st.text for st in steps), dice, action, pick, seed)
        if isinstance(chosen, str):
            notice = chosen
        else:
            steps = [*steps, Said({"greedy": "g", "sample": "s", "pick": "h"}[action], chosen.text,
                                  Under.now(dice, seed if action == "sample" else None))]
    texts = [prompt + "".join(st.text for st in steps[:i]) for i in range(len(steps) + 1)]
    # each step's chance is looked up in the distribution it was chosen from: one request per step, together
    limit = asyncio.Semaphore(REMOTE_REQUESTS)

    async def dist(text: str) -> list[Candidate]:
        async with limit:
            return await source.next_token(text, source.model.logprobs)

    tasks = [asyncio.ensure_future(dist(t)) for t in texts]
    try:
        dists = await asyncio.gather(*tasks)
    except BaseException:  # one failed: the others stop asking
        for t in tasks:
            t.cancel()
        raise
    history = []
    for i, (st, cands) in enumerate(zip(steps, dists)):
        now = warp_probs([c.prob for c in cands], st.under.params if st.under else dice.params)
        at = next((j for j, c in enumerate(cands) if c.text == st.text), None)
        history.append({"n": i + 1, "text": st.text, "id": None, "prob": None if at is None else now[at],
                        "raw": None if at is None else cands[at].prob, "how": how_taken(st.how, st.under, dice, i)})
    return {"bars": remote_bars(dists[-1], dice), "steps": steps, "history": history, "seed_now": dice.seed + len(steps),
            "notice": notice or (f"{source.name} runs on {source.model.host}: it sends its {source.model.logprobs} "
                                 "most likely tokens with the model's own probabilities, before any sampling "
                                 "setting, and the settings here act on those.")}


async def beside_of(source: Source, text: str, n: int) -> dict:
    """One column of the side-by-side view: a model's own most likely next tokens after the text."""
    async def column() -> dict:
        cands = await source.next_token(text, n)
        return {"rows": cands, "rest": max(0.0, 1 - sum(c.prob for c in cands))}

    return {"name": source.name, "size": source.size, **await or_message(column())}


async def steps_of(sources: Sources, source: Source, prompt: str, steps: str, dice: Dice, action: str,
                   pick: int | None, compare: str, changes: Changes = NONE) -> dict:
    """The stepper on the chosen model, and the compared model's distribution for the same text."""
    mine = own_steps(steps, source.key)
    if isinstance(source, RemoteSource):
        said = parse_said(mine or "")
        context = await or_message(remote_step_context(source, prompt, said or [], dice, action, pick))
        taken = context.get("steps", said or [])
        steps_text = format_said(taken)
        text = prompt + "".join(st.text for st in taken)
        context = {"history": [], "notice": None, **context,
                   "url": state_url(prompt, [], dice)}
    else:
        info = source.engine.info()
        said = parse_steps(mine or "", info.vocab_size, source.engine.eos_id)
        context = await stepper(source.engine, prompt, said or [], dice, action, pick, changes)
        taken = context["steps"]
        steps_text = context["steps_text"]
        text = prompt + source.engine.decode([t.id for t in taken])
    key = source.key
    steps_text = f"{key}~{steps_text}" if steps_text and key != MAIN else steps_text
    other = sources.other(compare, source)
    beside = None
    if other is not None and prompt:
        mine_column = ({"name": source.name, "size": source.size, "error": context["error"]} if "error" in context
                       else {"name": source.name, "size": source.size,
                             "rows": [Candidate(r["text"], r["model"]) for r in context["bars"]["rows"]],
                             "rest": context["bars"]["rest_model"]})
        beside = [mine_column, await beside_of(other, text, dice.n)]
    unread = mine is None or said is None
    return {**context, "steps_text": steps_text, "url": with_models(context["url"], steps_text, key, compare),
            "beside": beside, "unread": unread, "model_key": key, "compare_key": other.key if other else "",
            "model_choices": sources.choices()}
