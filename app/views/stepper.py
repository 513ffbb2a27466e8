"""The Inference stepper: one token appended at a time, its state all in the URL.

The state is the prompt, the settings, the seed and the steps taken (`steps`: how each token was
chosen, its key and the settings it was chosen under, "g318t100.s464t70k20r43"), so a link restores
what the class sees, and a step's chance stays the one it had when it was taken. A step's key is what the
model mints (app/views/stepping.py): a token id for a model loaded here, the token's text for a model server. `off`
names parts of the model switched off (app/views/ablation.py, set on the Internals page), and `patch` one cell of the
patching grid there (`patch=3.5`: the `clean` prompt's residual stream entering block 3 at token 5,
written into the prompt's run): every distribution and draw is then the changed model's.

The Inference page (app/pages/inference.py) and class sessions (app/classroom) drive it.
"""

from __future__ import annotations

import math
import re
from urllib.parse import parse_qsl, urlencode

from app.demo import DEFAULT_INFERENCE_PROMPT
from app.serving.sources import MAIN, TokenChance, Source, Sources
from app.views.stepping import ACTIONS, HOW, NONE, Changes, Dice, Refused, Steps, Taken, Under
from app.templating import or_message

DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 42, "n": 10}
BARS = (5, 10, 15, 20, 30)
MAX_STEPS_TEXT = 4000  # characters of a steps field: far more than a context of steps
# the settings a step was taken under, after its token: temperature and top-p in hundredths (the sliders move
# by 0.05), top-k and top-p only when they cut, and a sample's seed: "t70k20p90r43"
UNDER = r"t(\d{1,3})(?:k(\d{1,2}))?(?:p(\d{1,3}))?(?:r(\d{1,7}))?"


def under_of(t: str | None, k: str | None, p: str | None, r: str | None) -> Under | None:
    """The settings of a step's code, or None if they are outside what the controls allow."""
    if t is None:
        return None
    under = Under(int(t) / 100, int(k or 0), int(p or 100) / 100, None if r is None else int(r))
    return under if under.temperature <= 2 and under.top_k <= 50 and 0.05 <= under.top_p <= 1 else None


def parse_steps(text: str, model: Steps) -> list[Taken] | None:
    """"g318t100.s464t70r43" -> the steps; None if the field is not a list of the model's steps (a mangled link).
    The settings after a step's key may be left out ("g318.s464")."""
    if not text:
        return []
    step = re.compile(f"([sgh])({model.pattern})(?:{re.escape(model.sep)}{UNDER})?")
    parts = [step.fullmatch(p) for p in text.split(".")]
    if len(text) > MAX_STEPS_TEXT or len(parts) > model.max_steps or not all(parts):
        return None
    steps = [Taken(m[1], model.read(m[2]), under_of(*m.groups()[2:])) for m in parts]
    good = all(t.token is not None for t in steps)
    return steps if good and all((m[3] is None) == (t.under is None) for m, t in zip(parts, steps)) else None


def format_steps(steps: list[Taken], model: Steps) -> str:
    return ".".join(t.how + model.write(t.token) + (model.sep + t.under.code() if t.under else "") for t in steps)


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


def state_url(prompt: str, steps_text: str, dice: Dice, changes: Changes = NONE) -> str:
    """The page's URL for this state: what differs from the defaults."""
    q = {"prompt": prompt if prompt != DEFAULT_INFERENCE_PROMPT else None, "steps": steps_text or None,
         **changes.query(),
         "temperature": f"{dice.temperature:g}", "top_k": str(dice.top_k), "top_p": f"{dice.top_p:g}",
         "seed": str(dice.seed), "n": str(dice.n)}
    shown = {k: v for k, v in q.items() if v is not None and (k not in DEFAULTS or v != f"{DEFAULTS[k]:g}")}
    return "/inference" + ("?" + urlencode(shown) if shown else "")


async def step_context(model: Steps, prompt: str, steps: list[Taken], dice: Dice, action: str = "",
                       pick: int | None = None) -> dict:
    """Apply one action to the state and compute everything the stepper shows."""
    changes = model.changes
    if not prompt:
        return {"error": "Type a prompt above to see what could come next.", "kind": "info", "steps": [],
                "url": state_url(prompt, "", dice, changes)}
    await model.begin(prompt)
    notice = None
    if not model.fits(len(steps)):
        steps, notice = [], "Those steps do not fit the model's context after this prompt: starting from the prompt."
    if action == "undo" and steps:
        steps = steps[:-1]
    elif action == "reset":
        steps = []
    elif action in ACTIONS:
        seed = dice.seed + len(steps)
        try:
            chosen = await model.choose([t.token for t in steps], dice, action, pick, seed)
        except Refused as e:
            notice = str(e)
        else:
            steps = [*steps, Taken(ACTIONS[action], chosen, Under.now(dice, seed if action == "sample" else None))]
    shown = await model.show([t.token for t in steps], [t.under for t in steps], dice)
    history = [{"n": i + 1, "text": model.text(t.token), **p, "how": how_taken(t.how, t.under, dice, i)}
               for i, (t, p) in enumerate(zip(steps, shown.pop("chances")))]
    steps_text = format_steps(steps, model)
    if shown.get("patch_on"):
        shown["patch_on"]["without"] = state_url(prompt, steps_text, dice, Changes(changes.off))
    return {**shown, "steps": steps, "history": history, "notice": notice or shown.pop("said", None),
            "url": state_url(prompt, steps_text, dice, changes), "seed_now": dice.seed + len(steps)}


def among(entropy: float) -> str:
    """An entropy as the number of equally likely tokens it matches."""
    n = max(1, round(math.exp(entropy)))
    return f"{n:,} token" + ("" if n == 1 else "s")


async def stepper(model: Steps, prompt: str, steps: list[Taken], dice: Dice, action: str = "",
                  pick: int | None = None) -> dict:
    """step_context, with the problems a person can fix as a message in place of the bars."""
    context = await or_message(step_context(model, prompt, steps, dice, action, pick))
    context = {"steps": steps, "history": [], "notice": None,
               "url": state_url(prompt, format_steps(steps, model), dice, model.changes),
               "off_parts": [], "patch_on": None, **context}
    return {**context, "steps_text": format_steps(context["steps"], model)}


# ---------------------------------------------------------------- the models (app/serving/sources.py)
# With a second or a remote model configured, the URL also names the model that steps (`model=`) and one to
# show beside it (`compare=`). Steps belong to one model, so another model's steps carry its key:
# "second~g318.s464" are ids of the second model's vocabulary, "remote~gIHRoZQ" a model server's token text.

def own_steps(text: str, key: str) -> str | None:
    """The steps field's steps if they were taken on the model `key`, else None; "" when there are none."""
    if not text:
        return ""
    if key == MAIN:
        return None if "~" in text else text  # the loaded model's steps carry no key
    return text.removeprefix(f"{key}~") if text.startswith(f"{key}~") else None


def with_models(url: str, steps_text: str, key: str, compare: str) -> str:
    """A state's URL with the models named and the steps as that model writes them."""
    path, _, query = url.partition("?")
    q = {k: v for k, v in parse_qsl(query, keep_blank_values=True) if k != "steps"}
    q |= {"steps": steps_text} if steps_text else {}
    q |= {"model": key} if key != MAIN else {}
    q |= {"compare": compare} if compare else {}
    return path + ("?" + urlencode(q) if q else "")


async def beside_of(source: Source, text: str, n: int) -> dict:
    """One column of the side-by-side view: a model's own most likely next tokens after the text."""
    async def column() -> dict:
        cands = await source.next_token(text, n)
        return {"rows": cands, "rest": max(0.0, 1 - sum(c.prob for c in cands))}

    return {"name": source.name, "size": source.size, **await or_message(column())}


async def steps_of(sources: Sources, source: Source, prompt: str, steps: str, dice: Dice, action: str,
                   pick: int | None, compare: str, changes: Changes = NONE) -> dict:
    """The stepper on the chosen model, and the compared model's distribution for the same text."""
    model = source.steps(changes)
    mine = own_steps(steps, source.key)
    said = parse_steps(mine or "", model)
    context = await stepper(model, prompt, said or [], dice, action, pick)
    key = source.key
    steps_text = context["steps_text"]
    steps_text = f"{key}~{steps_text}" if steps_text and key != MAIN else steps_text
    other = sources.other(compare, source)
    beside = None
    if other is not None and prompt:
        text = prompt + model.joined([t.token for t in context["steps"]])
        mine_column = ({"name": source.name, "size": source.size, "error": context["error"]} if "error" in context
                       else {"name": source.name, "size": source.size,
                             "rows": [TokenChance(r["text"], r["model"]) for r in context["bars"]["rows"]],
                             "rest": context["bars"]["rest_model"]})
        beside = [mine_column, await beside_of(other, text, dice.n)]
    return {**context, "steps_text": steps_text, "url": with_models(context["url"], steps_text, key, compare),
            "beside": beside, "unread": mine is None or said is None, "model_key": key,
            "compare_key": other.key if other else "", "model_choices": sources.choices()}
