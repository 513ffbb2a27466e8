"""The Inference page: a stepper that appends one token at a time, rendered by the server.

All of its state is in the form and so in the URL: the prompt, the settings, the seed
and the steps taken (`steps`: how each token was chosen and its id, "g318.s464.h1110"),
so a link restores what the class sees. Each action (sample, take the most likely,
pick a bar, undo, start over) or a change of setting posts that state to
/partials/inference and gets the stepper back: the bars, and out-of-band the text so
far, the history, the statistics and the URL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from app import schemas as s
from app.demo import DEFAULT_INFERENCE_PROMPT
from app.deps import EngineDep
from app.engine import Engine, InputError
from app.templating import or_message, partial, render
from model.sampling import SamplingParams
from model.tokenizer import EOT_ID

router = APIRouter(include_in_schema=False)

DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 42, "n": 10}
BARS = (5, 10, 15, 20, 30)
HOW = {"s": "sampled", "g": "the most likely", "h": "chosen by hand"}
MAX_STEPS_TEXT = 4000  # characters of a steps field: far more than a context of steps
STEP = re.compile(r"([sgh])(\d{1,6})")


@dataclass
class Taken:
    how: str  # a key of HOW
    id: int


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


def parse_steps(text: str, vocab: int) -> list[Taken] | None:
    """"g318.s464" -> the steps; None if the field is not a list of steps (a mangled link)."""
    if not text:
        return []
    parts = text.split(".")
    if len(text) > MAX_STEPS_TEXT or not all(STEP.fullmatch(p) for p in parts):
        return None
    steps = [Taken(p[0], int(p[1:])) for p in parts]
    return steps if all(0 <= t.id < vocab and t.id != EOT_ID for t in steps) else None


def format_steps(steps: list[Taken]) -> str:
    return ".".join(f"{t.how}{t.id}" for t in steps)


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


def state_url(prompt: str, steps: list[Taken], dice: Dice) -> str:
    """The page's URL for this state: what differs from the defaults."""
    q = {"prompt": prompt if prompt != DEFAULT_INFERENCE_PROMPT else None, "steps": format_steps(steps) or None,
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


async def take(engine: Engine, ids: list[int], dice: Dice, action: str, pick: int | None, seed: int) -> int | str:
    """The token an action chooses to follow ids, or a sentence saying why none joins the text."""
    if action == "greedy":
        chosen: int | str = (await engine.next_token(s.NextTokenRequest(ids=ids, n=1))).before[0].id
    elif action == "sample":
        chosen = await sample(engine, ids, dice, seed)
    else:
        chosen = pick if pick is not None and 0 <= pick < engine.info().vocab_size else "invalid"
    if chosen == EOT_ID or chosen == "eos":
        return "The model chose <|endoftext|>: it thinks the text is finished. Undo, change the seed, or start over."
    if chosen == "invalid":
        return "That is not a token of this model's vocabulary."
    return chosen


async def step_context(engine: Engine, prompt: str, steps: list[Taken], dice: Dice, action: str = "",
                       pick: int | None = None) -> dict:
    """Apply one action to the state and compute everything the stepper shows."""
    info = engine.info()
    notice = None
    if not prompt:
        return {"error": "Type a prompt above to see what could come next.", "kind": "info", "steps": [],
                "url": state_url(prompt, [], dice)}
    prompt_ids = await engine.encode(prompt)
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
            chosen = await take(engine, prompt_ids + [t.id for t in steps], dice, action, pick, dice.seed + len(steps))
            if isinstance(chosen, str):
                notice = chosen
            else:
                steps = [*steps, Taken({"greedy": "g", "sample": "s", "pick": "h"}[action], chosen)]
    ids = prompt_ids + [t.id for t in steps]
    dist = await engine.next_token(s.NextTokenRequest(ids=ids, n=dice.n, temperature=dice.temperature,
                                                      top_k=dice.top_k, top_p=dice.top_p))
    probs = await engine.chosen(ids, len(prompt_ids) - 1, dice.params) if steps else []
    history = [{"n": i + 1, "text": engine.texts[t.id], "id": t.id, **p,
                "how": HOW[t.how] + (f", seed {dice.seed + i}" if t.how == "s" else "")}
               for i, (t, p) in enumerate(zip(steps, probs))]
    return {"dist": dist, "bars": bars_of(dist, dice, info.vocab_size), "steps": steps, "history": history,
            "notice": notice, "url": state_url(prompt, steps, dice), "seed_now": dice.seed + len(steps)}


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


Number = Annotated[float | None, Form()]


def query_float(request: Request, name: str) -> float | None:
    """A number from the URL; a mangled one is None (the page falls back to the default, not a 422)."""
    try:
        return float(request.query_params[name])
    except (KeyError, ValueError):
        return None


@router.get("/inference", response_class=HTMLResponse)
async def inference(request: Request, engine: EngineDep, prompt: str = DEFAULT_INFERENCE_PROMPT, steps: str = ""):
    info = engine.info()
    dice = dice_of(*(query_float(request, k) for k in ("temperature", "top_k", "top_p", "seed", "n")))
    taken = parse_steps(steps, info.vocab_size)
    context = await stepper(engine, prompt, taken or [], dice)
    if taken is None:
        context["notice"] = "This link's steps could not be read: starting from the prompt."
    return render(request, "inference.html", "inference", info=info, prompt=prompt, dice=dice,
                  default_prompt=DEFAULT_INFERENCE_PROMPT, defaults=DEFAULTS, n_choices=BARS, among=among,
                  oob=False, **context)


async def stepper(engine: Engine, prompt: str, steps: list[Taken], dice: Dice, action: str = "",
                  pick: int | None = None) -> dict:
    """step_context, with the problems a person can fix as a message in place of the bars."""
    context = await or_message(step_context(engine, prompt, steps, dice, action, pick))
    context = {"steps": steps, "history": [], "notice": None, "url": state_url(prompt, steps, dice), **context}
    return {**context, "steps_text": format_steps(context["steps"])}


@router.post("/partials/inference", response_class=HTMLResponse)
async def inference_partial(request: Request, engine: EngineDep, prompt: Annotated[str, Form()] = "",
                            steps: Annotated[str, Form()] = "",
                            temperature: Number = None, top_k: Number = None, top_p: Number = None,
                            seed: Number = None, n: Number = None, action: Annotated[str, Form()] = "",
                            pick: Annotated[int | None, Form()] = None):
    dice = dice_of(temperature, top_k, top_p, seed, n)
    taken = parse_steps(steps, engine.info().vocab_size)
    context = await stepper(engine, prompt, taken or [], dice, action or ("pick" if pick is not None else ""), pick)
    response = partial(request, "partials/_inference.html", prompt=prompt, dice=dice, among=among,
                       info=engine.info(), oob=True, **context)
    response.headers["HX-Replace-Url"] = context["url"]
    return response
