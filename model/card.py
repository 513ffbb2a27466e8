"""Write the model card of a trained checkpoint: its figures measured, not remembered.

    python -m model.card --checkpoint model/checkpoints/deepdive-tiny --hardware "2-core CPU" \
        --stage data/default 1700 "python -m model.train prepare ... && python -m model.train run ..." \
        [--stage data/anneal 1200 "... run --init-from ..."]

One --stage per training stage, in order: its prepared data, its steps, its commands.

Measures the validation loss on the whole held-out split and on the committed
sample (model/samples/tinystories_valid.txt, which a test recomputes), the
unigram and uniform baselines, and samples from story openings; writes
model_card.json (read by the app) and README.md (read by people).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from model.loading import load_model
from model.sampling import SamplingParams
from model.generate import generate
from model.tokenizer import EOT_ID, gpt2_encoding
from model.train import documents, load_tokens, token_loss

SAMPLES = Path(__file__).parent / "samples"
HELD_OUT_SAMPLE = SAMPLES / "tinystories_valid.txt"
CARD_PROMPTS = ("Once upon a time", "Tom and his dog", "Lily wanted to")


def sample_tokens(path: Path) -> list[int]:
    """A text file as the model saw its split: documents, each followed by <|endoftext|>."""
    enc = gpt2_encoding()
    ids: list[int] = []
    for doc in documents(path):
        ids += enc.encode_ordinary(doc) + [EOT_ID]
    return ids


def unigram_loss(train: list[np.ndarray], weights: list[float], val: np.ndarray, vocab: int = 50257) -> float:
    """Cross-entropy of the training mixture's token frequencies (add-one smoothed) on val."""
    p = np.zeros(vocab)
    for toks, w in zip(train, weights):
        counts = np.bincount(toks, minlength=vocab) + 1.0
        p += w * counts / counts.sum()
    p /= sum(weights)
    return float(-np.log(p[val.astype(np.int64)]).mean())


def story_samples(model, n: int = 3, temperature: float = 0.8, max_new_tokens: int = 120) -> list[dict]:
    enc = gpt2_encoding()
    out = []
    for prompt in CARD_PROMPTS:
        for seed in range(n):
            ids = []
            for step in generate(model, enc.encode_ordinary(prompt), SamplingParams(temperature=temperature),
                                 max_new_tokens, seed=seed):
                if step.id == EOT_ID:
                    break
                ids.append(step.id)
            out.append({"prompt": prompt, "seed": seed, "temperature": temperature, "text": prompt + enc.decode(ids)})
    return out


def evaluations(log: Path) -> list[dict]:
    return [r for r in map(json.loads, log.read_text().splitlines()) if "val_loss" in r]


def build_card(checkpoint: Path, stages: list[tuple[Path, int, str]], hardware: str) -> dict:
    """stages: (prepared data, steps, commands) of each training stage, in order; every stage's data
    holds the same sources (their mixture weights may differ)."""
    loaded = load_model(checkpoint)
    model = loaded.model
    metas = [json.loads((data / "meta.json").read_text()) for data, _, _ in stages]
    meta, data = metas[-1], stages[-1][0]
    names = list(meta["sources"])
    total_steps = sum(steps for _, steps, _ in stages)
    # each source's share of all training batches, over the stages
    share = {n: sum(m["sources"][n]["weight"] / sum(v["weight"] for v in m["sources"].values()) * steps
                    for m, (_, steps, _) in zip(metas, stages)) / total_steps for n in names}
    val = load_tokens(data / "tinystories.val.bin")
    evals = evaluations(checkpoint / "training_log.jsonl")
    final = evals[-1]
    best_step = min(evals, key=lambda r: r["val_loss"])["step"]  # the weights the run exported
    with torch.inference_mode():
        full_val = token_loss(model, val)
        held = sample_tokens(HELD_OUT_SAMPLE)
        held_loss = token_loss(model, held)
    unigram = unigram_loss([np.asarray(load_tokens(data / f"{n}.train.bin")) for n in names],
                           [share[n] for n in names], np.asarray(val))
    return {
        "name": checkpoint.name,
        "description": "A small GPT-2-architecture model pre-trained by Deep Dive's own training code "
                       "(python -m model.train). It is not OpenAI's GPT-2: it is far smaller and has read "
                       "only children's stories.",
        "architecture": {"n_layer": loaded.config.n_layer, "n_head": loaded.config.n_head,
                         "n_embd": loaded.config.n_embd, "n_ctx": loaded.config.n_ctx,
                         "vocab_size": loaded.config.vocab_size, "tokenizer": "GPT-2 BPE (tiktoken)"},
        "parameters": model.num_parameters(),
        "corpus": {n: {"weight": round(share[n], 3), **{k: meta["sources"][n][k] for k in
                       ("train_documents", "val_documents", "train_characters", "train_tokens", "val_tokens")}}
                   for n in names},
        "licences": {
            "tinystories": "TinyStories (Eldan & Li, 2023), CDLA-Sharing-1.0",
            "tales": "public-domain children's books (Project Gutenberg texts, boilerplate removed)",
            "model": "the weights are not data under CDLA; they carry no obligation from it",
        },
        "training": {
            "tokens_seen": final["tokens"], "steps": final["step"], "best_step": best_step,
            "wall_time_s": final.get("elapsed_s"), "hardware": hardware,
            "command": " && ".join(command for _, _, command in stages),
            "stages": [{"steps": steps, "weights": {n: m["sources"][n]["weight"] for n in names}, "command": command}
                       for m, (_, steps, command) in zip(metas, stages)],
            "final_train_loss": final["train_loss"], "final_val_loss": final["val_loss"],
        },
        "evaluation": {
            "tinystories_valid_loss": round(full_val, 4),
            "tinystories_valid_tokens": int(len(val)),
            "held_out_sample": {"file": "model/samples/tinystories_valid.txt", "tokens": len(held),
                                "loss": round(held_loss, 4)},
            "baselines": {"unigram": round(unigram, 4), "uniform": round(math.log(loaded.config.vocab_size), 4)},
            "target": 2.8,
        },
        "samples": story_samples(model),
    }


def card_markdown(card: dict) -> str:
    ev, tr, p = card["evaluation"], card["training"], card["parameters"]
    lines = [
        f"# {card['name']}", "", card["description"], "",
        "## At a glance", "",
        "| | |", "|---|---|",
        f"| architecture | GPT-2: {card['architecture']['n_layer']} layers, {card['architecture']['n_head']} heads, "
        f"{card['architecture']['n_embd']} wide, context {card['architecture']['n_ctx']}, vocabulary 50,257 |",
        f"| parameters | {p['total']:,} (of which {p['token_embedding']:,} token embedding, tied to the output layer) |",
        f"| tokens seen | {tr['tokens_seen']:,} in {tr['steps']:,} steps |",
        f"| hardware, wall time | {tr['hardware']}, {tr['wall_time_s'] / 60:.0f} min |",
        f"| final train / validation loss (training log) | {tr['final_train_loss']:.3f} / {tr['final_val_loss']:.3f} nats per token |",
        "", "## Validation loss (nats per token, lower is better)", "",
        "| measure | loss |", "|---|---|",
        f"| TinyStories validation, all {ev['tinystories_valid_tokens']:,} tokens | **{ev['tinystories_valid_loss']:.3f}** |",
        f"| committed held-out sample `{ev['held_out_sample']['file']}` ({ev['held_out_sample']['tokens']:,} tokens) | {ev['held_out_sample']['loss']:.3f} |",
        f"| baseline: unigram (token frequencies of the training text) | {ev['baselines']['unigram']:.3f} |",
        f"| baseline: uniform over the vocabulary (ln 50257) | {ev['baselines']['uniform']:.3f} |",
        f"| target set for this model | ≤ {ev['target']} |",
        "", "## Training data", "",
        "| source | share of training batches | documents (train / held out) | training tokens |",
        "|---|---|---|---|",
    ]
    for name, c in card["corpus"].items():
        lines.append(f"| {name} | {c['weight']:.0%} | {c['train_documents']:,} / {c['val_documents']:,} | {c['train_tokens']:,} |")
    lines += ["", "Licences: " + "; ".join(f"{k}: {v}" for k, v in card["licences"].items()) + ".", "",
              "## Reproduce", ""]
    stages = tr["stages"]
    if len(stages) > 1:
        lines += [f"Training ran in {len(stages)} stages, one after the other; each later stage starts from the "
                  "best weights of the one before (`--init-from`), with its own warm-up, cosine and mixture.", ""]
    for i, st in enumerate(stages, 1):
        mixture = ", ".join(f"{n} {w}" for n, w in st["weights"].items())
        if len(stages) > 1:
            lines += [f"Stage {i}: {st['steps']:,} steps, mixture {mixture}.", ""]
        lines += ["```", st["command"], "```", ""]
    lines += ["## Samples (temperature 0.8)", ""]
    for s in card["samples"]:
        lines += [f"**{s['prompt']}** (seed {s['seed']}):", "", "> " + s["text"].replace("\n", "\n> "), ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m model.card")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--stage", nargs=3, action="append", required=True, metavar=("DATA", "STEPS", "COMMAND"),
                   help="one training stage, in order: its prepared data folder, its steps, the commands that ran it")
    p.add_argument("--hardware", required=True)
    args = p.parse_args()
    checkpoint = Path(args.checkpoint)
    card = build_card(checkpoint, [(Path(d), int(n), c) for d, n, c in args.stage], args.hardware)
    (checkpoint / "model_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    (checkpoint / "README.md").write_text(card_markdown(card) + "\n")
    print(json.dumps(card["evaluation"], indent=2))


if __name__ == "__main__":
    main()
