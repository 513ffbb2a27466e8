"""Stage 1, pre-training data: the samples' size, the training stream as tokens, and the training log's curve and
samples."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.demo import SAMPLE_FILES
from app.deps import EngineDep
from app.serving.engine import Engine
from app.views.figures import line_chart
from app.templating import ROOT, render
from model.training.corpus import documents
from model.tokenizers.hf_tokenizer import HFTokenizer
from model.tokenizers.tokenizer import Tokenizer
from model.training.training_log import evaluations, finite, other_sources, read_training_log

SAMPLES = ROOT / "model" / "samples"
DATA_TOKENS = 400         # tokens of the training stream on the data page

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class SampleStats:
    name: str
    what: str
    documents: int
    characters: int
    tokens: int


_sample_cache: dict[tuple[Tokenizer | HFTokenizer, str], SampleStats] = {}  # by tokenizer and sample


def count_sample(tokenizer: Tokenizer | HFTokenizer, name: str, what: str) -> SampleStats:
    """A committed sample counted as training counts it: each document followed by one end-of-text token."""
    docs = documents(SAMPLES / name)
    tokens = sum(len(tokenizer.encode(d)) + 1 for d in docs)
    return SampleStats(name, what, len(docs), sum(map(len, docs)), tokens)


async def sample_stats(engine: Engine) -> list[SampleStats]:
    # server files, not user input: the engine's tokenizer, without the request size limit; counted once
    for name, what in SAMPLE_FILES:
        if (engine.tokenizer, name) not in _sample_cache:
            _sample_cache[engine.tokenizer, name] = await anyio.to_thread.run_sync(count_sample, engine.tokenizer,
                                                                                   name, what)
    return [_sample_cache[engine.tokenizer, name] for name, _ in SAMPLE_FILES]


@lru_cache(maxsize=1)
def training_stream(tokenizer: Tokenizer | HFTokenizer, n_tokens: int) -> list[dict]:
    """The first n_tokens of the training sample as the network sees it: documents joined by the end-of-text
    token (GPT-2's <|endoftext|>; nothing where the tokenizer names none)."""
    stream: list[dict] = []
    eot = tokenizer.eos_id
    for doc in documents(SAMPLES / "tinystories_train.txt"):
        stream += [{"id": t.id, "text": t.text, "eot": False} for t in tokenizer.tokens(doc)]
        if eot is not None:
            stream.append({"id": eot, "text": tokenizer.lookup(eot).text, "eot": True})
        if len(stream) >= n_tokens:
            break
    return stream[:n_tokens]


def natural_points(evals: list[dict]) -> list[list[float]]:
    """The training loss on natural-text rows only, where the log has it (`train_loss_natural`)."""
    return [[r["tokens"], r["train_loss_natural"]] for r in evals if finite(r.get("train_loss_natural"))]


def stage_starts(records: list[dict], stages: tuple) -> list[dict]:
    """Where each training stage after the first began, in tokens seen: from the card's steps per stage
    and the log's record of the step the stage started from. Where a stage's mixture changed and the log
    has no natural-text training loss to plot, the label says why the training loss jumps there: the rows
    it is measured on changed, not what the model knows."""
    marks, step = [], 0
    plain = not natural_points(evaluations(records))
    for i, (before, st) in enumerate(zip(stages, stages[1:]), 2):
        step += before.steps
        at = next((r["tokens"] for r in records if r.get("step") == step and finite(r.get("tokens"))), None)
        if at is not None:
            new_mix = plain and st.weights != before.weights
            marks.append({"x": at, "label": f"stage {i}" + (": new mix, loss jumps" if new_mix else ""),
                          "step": step, "class": "stage"})
    return marks


def phase_starts(evals: list[dict]) -> list[dict]:
    """Where the log's evaluations change `phase` (a stage trained in phases, such as "A" then "B"): a mark for
    each change, labelled like the stages'. Logs without phases have none."""
    marks, last = [], None
    for r in evals:
        phase = r.get("phase")
        if isinstance(phase, str) and phase:
            if last is not None and phase != last:
                marks.append({"x": r["tokens"], "label": f"phase {phase}", "step": r["step"], "class": "phase"})
            last = phase
    return marks


def curve_spec(evals: list[dict], marks: list[dict]) -> dict | None:
    """The training curve: train and validation loss against tokens seen, and where each training stage (and
    phase) began, as the series (each with its own style, `class`, and legend key, `key`) and the chart's
    geometry (app/views/figures.py line_chart), which templates/data.html draws as SVG."""
    if not evals:
        return None
    series = [
        {"label": "training loss", "class": "s-train", "key": "train",
         "points": [[r["tokens"], r["train_loss"]] for r in evals if finite(r.get("train_loss"))]},
        {"label": "validation loss (held-out stories)", "class": "s-val", "key": "val", "dots": True,
         "points": [[r["tokens"], r["val_loss"]] for r in evals]},
    ]
    natural = natural_points(evals)
    if natural:  # the mixture's synthetic rows score differently: this line is the learning alone
        series.append({"label": "training loss (natural text only)", "class": "s-natural", "key": "natural",
                       "points": natural})
    # other validation sources (such as the books), each its own dashed style; the main one is already drawn
    series += [{"label": f"validation loss ({name})", "class": f"s-extra s-extra-{i % 3 + 1}",
                "key": f"extra-{i % 3 + 1}", "points": points}
               for i, (name, points) in enumerate(other_sources(evals).items())]
    return {"series": series, "chart": line_chart(series, sorted(marks + phase_starts(evals), key=lambda m: m["x"]),
                                                  "tokens seen", "loss (nats per token)")}


def checkpoint_samples(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        samples = r.get("samples")
        if isinstance(samples, dict) and samples:
            out.append({"step": r["step"], "tokens": r.get("tokens"), "val_loss": r.get("val_loss"),
                        "samples": [(str(p), str(t)) for p, t in samples.items()]})
    return out


@router.get("/data", response_class=HTMLResponse)
async def data(request: Request, engine: EngineDep):
    records = read_training_log(engine.loaded.path / "training_log.jsonl")
    card = engine.loaded.card
    corpus = card.corpus if card else ()
    weights = sum(c.weight for c in corpus if c.weight is not None)
    evals = evaluations(records or [])
    marks = stage_starts(records or [], card.stages if card else ())
    checkpoints = checkpoint_samples(records or [])
    return render(request, "data.html", "data",
                  stream=training_stream(engine.tokenizer, DATA_TOKENS), samples=await sample_stats(engine),
                  corpus=corpus, weights=weights, records=records, curve=curve_spec(evals, marks), evals=evals,
                  marks=marks, checkpoints=checkpoints, card=card, info=engine.info(),
                  below=[r for r in evals if finite(r.get("train_loss")) and r["val_loss"] < r["train_loss"]])
