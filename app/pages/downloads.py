"""Each figure's numbers as a CSV file a teacher can take home (the figure itself is a PNG, made in the browser
by static/js/figures.js).

Each route takes the query parameters of its page's URL state, so the page builds the link from what it shows,
and computes the numbers with the engine calls the page uses. The answer is `text/csv; charset=utf-8`, sent
as an attachment named deepdive-<figure>.csv; Python's csv module quotes commas, quotes and newlines in token
texts. A parameter left out takes the page's default; a bad one (an empty or too long text, a number that is
not one or is out of range, a prompt longer than the context) is answered 413 or 422 with one plain sentence.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Iterable, Sequence

import anyio
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from app.schemas import requests as rq
from app.demo import DEFAULT_INFERENCE_PROMPT, DEFAULT_INTERNALS_PROMPT, DEFAULT_LOSS_TEXT, DEFAULT_TOKENIZER_TEXT
from app.deps import EngineDep
from app.serving.engine import Engine
from app.problems import InputError, Problem
from app.views.csv_files import csv_file, num
from app.problems import sentence
from app.views.stepper import BARS, DEFAULTS, parse_steps, step_context
from app.views.stepping import Dice, LocalSteps
from app.security import ModelTurn
from model.tokenizers import encodings
from model.training.training_log import evaluations, other_sources, read_training_log

router = APIRouter(include_in_schema=False)

Table = tuple[Sequence[str], Iterable[Sequence[object]]]
MAX_NUMBER_CHARS = 30  # a number's text: more is not a setting anyone typed


# ---------------------------------------------------------------- answers

def refusal(text: str, status: int) -> PlainTextResponse:
    return PlainTextResponse(sentence(text), status_code=status)


async def answer(figure: str, table: Awaitable[Table]) -> Response:
    """The table as a CSV file, or the sentence that says why there is none."""
    try:
        header, rows = await table
    except Problem as e:
        return refusal(e.sentence, e.status)
    # a long text's comparison is tens of thousands of rows: written off the event loop
    return await anyio.to_thread.run_sync(csv_file, figure, header, rows)


# ---------------------------------------------------------------- parameters

def shown(value: str) -> str:
    return repr(value) if len(value) <= 20 else repr(value[:17]) + "…"


def whole(value: str | None, name: str, default: int, lo: int, hi: int) -> int:
    """A whole-number parameter in [lo, hi]; None (left out) is the default."""
    if value is None:
        return default
    try:
        if len(value) > MAX_NUMBER_CHARS:
            raise ValueError
        n = int(value.strip())
    except ValueError:
        raise InputError(f"The setting {name} must be a whole number from {lo} to {hi}, not {shown(value)}") from None
    if not lo <= n <= hi:
        raise InputError(f"The setting {name} is {n}; choose one from {lo} to {hi}")
    return n


def decimal(value: str | None, name: str, default: float, lo: float, hi: float) -> float:
    """A number parameter in [lo, hi]; None (left out) is the default."""
    if value is None:
        return default
    try:
        if len(value) > MAX_NUMBER_CHARS:
            raise ValueError
        x = float(value.strip())
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise InputError(f"The setting {name} must be a number from {lo:g} to {hi:g}, not {shown(value)}")
    if not lo <= x <= hi:
        raise InputError(f"The setting {name} is {x:g}; choose one from {lo:g} to {hi:g}")
    return x


def some_text(text: str, name: str, blank_is_empty: bool = False) -> str:
    """The text, unless it is empty (or, where white space alone shows nothing, blank)."""
    if not (text.strip() if blank_is_empty else text):
        raise InputError(f"The {name} is empty: give at least one token")
    return text


# ---------------------------------------------------------------- internals

async def attention_table(engine: Engine, prompt: str, layer: str | None, head: str | None) -> Table:
    info = engine.info()
    L = whole(layer, "layer", info.n_layer - 1, 0, info.n_layer - 1)
    H = whole(head, "head", 0, 0, info.n_head - 1)
    r = await engine.activations(rq.ActivationsRequest(
        text=some_text(prompt, "prompt"), residual_norms=False, attention=[rq.AttentionSelect(layer=L, heads=[H])]))
    pattern = next(a.pattern for a in r.attention or [] if a.layer == L and a.head == H)
    n = len(r.tokens)
    header = ["position", "token", *(f"key {k}" for k in range(n))]
    rows = ([q, t.text, *map(num, row), *[""] * (n - len(row))] for q, (t, row) in enumerate(zip(r.tokens, pattern)))
    return header, rows


@router.get("/download/attention.csv", dependencies=[ModelTurn])
async def attention_csv(engine: EngineDep, prompt: str = DEFAULT_INTERNALS_PROMPT, layer: str | None = None,
                        head: str | None = None):
    return await answer("attention", attention_table(engine, prompt, layer, head))


async def lens_table(engine: Engine, prompt: str) -> Table:
    r = await engine.activations(rq.ActivationsRequest(text=some_text(prompt, "prompt"), residual_norms=False,
                                                      logit_lens=1))
    rows = ([state.label, p, r.tokens[p].text, top[0].text, num(top[0].prob)]
            for state in r.logit_lens or [] for p, top in enumerate(state.top))
    return ["state", "position", "token", "top_guess", "probability"], rows


@router.get("/download/lens.csv", dependencies=[ModelTurn])
async def lens_csv(engine: EngineDep, prompt: str = DEFAULT_INTERNALS_PROMPT):
    return await answer("lens", lens_table(engine, prompt))


# ---------------------------------------------------------------- inference

async def next_token_table(engine: Engine, prompt: str, steps: str, temperature: str | None, top_k: str | None,
                           top_p: str | None, seed: str | None, n: str | None) -> Table:
    info, d = engine.info(), DEFAULTS
    dice = Dice(temperature=decimal(temperature, "temperature", d["temperature"], 0, 2),
                top_k=whole(top_k, "top_k", d["top_k"], 0, 50), top_p=decimal(top_p, "top_p", d["top_p"], 0.05, 1),
                seed=whole(seed, "seed", d["seed"], 0, 999_999),
                n=whole(n, "n (the bars shown)", d["n"], 1, max(BARS)))
    model = LocalSteps(engine)
    taken = parse_steps(steps, model)
    if taken is None:
        raise InputError("The steps must be the steps taken, such as g318.s464.h1110 (g, s or h and a token id, "
                         "joined by dots)")
    ids = await engine.encode(some_text(prompt, "prompt"))
    engine.check_context(len(ids))
    if len(ids) + len(taken) > info.n_ctx:
        raise InputError(f"The prompt ({len(ids):,} tokens) and its {len(taken):,} steps do not fit this model's "
                         f"context of {info.n_ctx:,} tokens: undo steps or shorten the prompt")
    bars = (await step_context(model, prompt, taken, dice))["bars"]
    rows = ([r["rank"], r["id"], r["text"], num(r["model"]), num(r["now"])] for r in bars["rows"])
    return ["rank", "id", "token", "model_probability", "chance_now"], rows


@router.get("/download/next-token.csv", dependencies=[ModelTurn])
async def next_token_csv(engine: EngineDep, prompt: str = DEFAULT_INFERENCE_PROMPT, steps: str = "",
                         temperature: str | None = None, top_k: str | None = None, top_p: str | None = None,
                         seed: str | None = None, n: str | None = None):
    return await answer("next-token", next_token_table(engine, prompt, steps, temperature, top_k, top_p, seed, n))


# ---------------------------------------------------------------- training: the loss of each token

async def loss_table(engine: Engine, text: str) -> Table:
    r, _, _ = await engine.score_prefix(some_text(text, "text", blank_is_empty=True))
    rows = ([p.position - 1, p.id, p.text, num(p.prob), num(p.loss), p.rank, p.top_text] for p in r.predictions)
    return ["position", "id", "token", "probability", "loss_nats", "rank", "top_guess"], rows


@router.get("/download/loss.csv", dependencies=[ModelTurn])
async def loss_csv(engine: EngineDep, text: str = DEFAULT_LOSS_TEXT):
    return await answer("loss", loss_table(engine, text))


# ---------------------------------------------------------------- data: the training curve

def curve_table(engine: Engine) -> Table:
    """The log's evaluations; each other validation source a column, unless it only repeats val_loss
    (as on the page's chart, app/pages/data.py curve_spec)."""
    evals = evaluations(read_training_log(engine.loaded.path / "training_log.jsonl") or [])
    others = list(other_sources(evals))
    # the natural-text training loss and the training phase, as the chart shows them, where the log has them
    extra = [k for k in ("train_loss_natural", "phase") if any(k in r for r in evals)]
    rows = ([num(r["step"]), num(r["tokens"]), num(r.get("train_loss")), num(r["val_loss"]),
             *(num((r.get("val_losses") or {}).get(name)) for name in others),
             *(num(r.get(k)) if k != "phase" else str(r.get(k) or "") for k in extra)] for r in evals)
    return (["step", "tokens", "train_loss", "val_loss", *(f"val_loss_{name}" for name in others), *extra],
            list(rows))


@router.get("/download/training-curve.csv")
async def training_curve_csv(engine: EngineDep):
    header, rows = await anyio.to_thread.run_sync(curve_table, engine)
    return csv_file("training-curve", header, rows)


# ---------------------------------------------------------------- tokenizer: the vocabularies compared

async def compare_table(engine: Engine, text: str) -> Table:
    engine.check_text(some_text(text, "text"))
    # the loaded model's own tokenizer first, where it has one; first use builds two encodings
    comparisons = await anyio.to_thread.run_sync(encodings.compare, text, engine.own_tokenizer)
    rows = ([c.name, i, t.id, t.text] for c in comparisons for i, t in enumerate(c.tokens))
    return ["vocabulary", "index", "id", "token"], rows


@router.get("/download/compare.csv")
async def compare_csv(engine: EngineDep, text: str = DEFAULT_TOKENIZER_TEXT):
    return await answer("compare", compare_table(engine, text))
