"""Write the model card of a trained checkpoint: its figures measured, not remembered.

    python -m model.training.card --checkpoint model/checkpoints/deepdive-tiny --hardware "2-core CPU" \
        --stage data/default 1700 "python -m model.training.train prepare ... && python -m model.training.train run ..." \
        [--stage data/anneal 1200 "... run --init-from ..."]

One --stage per training stage, in order: its prepared data, its steps, its commands.

Measures the validation loss on the whole held-out split and on the committed
sample (model/samples/tinystories_valid.txt, which a test recomputes), the
unigram and uniform baselines, in-context copying (model/probes/incontext.py), and
samples from story openings; lists every change made to the training text; writes
model_card.json (read by the app) and README.md (read by people).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import torch

from model.probes.incontext import measure
from model.loading import load_model, read_config
from model.model_card import percent
from model.decode.sampling import SamplingParams
from model.decode.generate import generate
from model.tokenizers.tokenizer import EOT_ID, gpt2_encoding
from model.training.corpus import documents
from model.training.data import load_tokens
from model.nets.gpt2 import GPT
from model.training.train import samples, token_loss
from model.training.training_log import evaluations, read_training_log

SAMPLES = Path(__file__).parent.parent / "samples"
HELD_OUT_SAMPLE = SAMPLES / "tinystories_valid.txt"
CARD_PROMPTS = ("Once upon a time", "Tom and his dog", "Lily wanted to")
TARGET_VALID_LOSS = 2.716  # the model before in-context training: copying must not cost story quality
INCONTEXT_TARGETS = {"second_copy": 1.0, "name_later_uses": 1.5, "head_score": 0.5}


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


def transformations(metas: list[dict], stages: list[tuple[Path, int, str]]) -> list[str]:
    """Every change made to the text before training, as a sentence for the card, naming the stages it applied to."""
    said: dict[str, list[int]] = {}  # sentence -> the stages it applies to
    for i, (m, (_, _, command)) in enumerate(zip(metas, stages), 1):
        renamed = [n for n, src in m["sources"].items() if src.get("invented_names")]
        if renamed:
            said.setdefault(
                f"in source {', '.join(renamed)} (a second copy of the TinyStories stories, held-out ones included), "
                "each character name that the stories introduce with \"named X\" is replaced by an invented name "
                "made of random syllables, the same name throughout a story (model/training/augment.py). The names the "
                "in-context probe uses are never generated.", []).append(i)
        share = re.search(r"--repeat-share ([0-9.]+)", command)
        if share and float(share.group(1)) > 0:
            rand = re.search(r"--repeat-random ([0-9.]+)", command)
            rand = float(rand.group(1)) if rand else 0.5
            end = re.search(r"--repeat-share-end ([0-9.]+)", command)
            rows = f"{float(share.group(1)):.0%} of training rows"
            if end:
                rows = (f"from {float(share.group(1)):.0%} of training rows at the first step to "
                        f"{float(end.group(1)):.0%} at the last")
            said.setdefault(f"{rows} are a span of 8 to 64 tokens repeated to fill the row: for {rand:.0%} of "
                            "them random tokens among the 3,000 most frequent of the training text (the first copy "
                            "is not scored), for the rest a piece of the training text.", []).append(i)

    def which(ns: list[int]) -> str:
        return f"Stage {ns[0]}" if len(ns) == 1 else "Stages " + ", ".join(map(str, ns[:-1])) + f" and {ns[-1]}"

    return [f"{which(ns)}: {text}" for text, ns in said.items()]


def build_card(checkpoint: Path, stages: list[tuple[Path, int, str]], hardware: str, exported: str = "best") -> dict:
    """stages: (prepared data, steps, commands) of each training stage, in order; a source missing from a
    stage's data had no share in it. exported: which weights of the last stage the run exported
    (train.py's --export-weights)."""
    loaded = load_model(checkpoint)
    model = loaded.model
    metas = [json.loads((data / "meta.json").read_text()) for data, _, _ in stages]
    meta, data = metas[-1], stages[-1][0]
    names = list(dict.fromkeys(n for m in metas for n in m["sources"]))
    total_steps = sum(steps for _, steps, _ in stages)

    def weight(m: dict, n: str) -> float:
        return m["sources"][n]["weight"] / sum(v["weight"] for v in m["sources"].values()) if n in m["sources"] else 0.0

    # each source's share of all training batches, over the stages
    share = {n: sum(weight(m, n) * steps for m, (_, steps, _) in zip(metas, stages)) / total_steps for n in names}
    val = load_tokens(data / "tinystories.val.bin")
    evals = evaluations(read_training_log(checkpoint / "training_log.jsonl") or [])
    final = evals[-1]
    best_step = min(evals, key=lambda r: r["val_loss"])["step"] if exported == "best" else final["step"]
    with torch.inference_mode():
        full_val = token_loss(model, val)
        held = sample_tokens(HELD_OUT_SAMPLE)
        held_loss = token_loss(model, held)
        copying = measure(model)
    last = list(meta["sources"])
    unigram = unigram_loss([np.asarray(load_tokens(data / f"{n}.train.bin")) for n in last],
                           [share[n] for n in last], np.asarray(val))
    def latest(n: str) -> dict:
        return next(m["sources"][n] for m in reversed(metas) if n in m["sources"])

    return {
        "name": checkpoint.name,
        "description": "A small GPT-2-architecture model pre-trained by Deep Dive's own training code "
                       "(python -m model.training.train). It is not OpenAI's GPT-2: it is far smaller and has read "
                       "only children's stories.",
        "architecture": {"n_layer": loaded.config.n_layer, "n_head": loaded.config.n_head,
                         "n_embd": loaded.config.n_embd, "n_ctx": loaded.config.n_ctx,
                         "vocab_size": loaded.config.vocab_size, "tokenizer": "GPT-2 BPE (tiktoken)"},
        "parameters": model.num_parameters(),
        "corpus": {n: {"weight": round(share[n], 3), **{k: latest(n)[k] for k in
                       ("train_documents", "val_documents", "train_characters", "train_tokens", "val_tokens")}}
                   for n in names},
        "transformations": transformations(metas, stages),
        "licences": {k: v for k, v in {
            "tinystories": "TinyStories (Eldan & Li, 2023), CDLA-Sharing-1.0",
            "named": "TinyStories (Eldan & Li, 2023) with invented character names, CDLA-Sharing-1.0",
            "tales": "public-domain children's books (Project Gutenberg texts, boilerplate removed)",
            "model": "the weights are not data under CDLA; they carry no obligation from it",
        }.items() if k in names or k == "model"},
        "training": {
            "tokens_seen": final["tokens"], "steps": final["step"], "best_step": best_step,
            "wall_time_s": final.get("elapsed_s"), "hardware": hardware,
            "command": " && ".join(command for _, _, command in stages),
            "stages": [{"steps": steps, "weights": {n: src["weight"] for n, src in m["sources"].items()}, "command": command}
                       for m, (_, steps, command) in zip(metas, stages)],
            "final_train_loss": final["train_loss"], "final_val_loss": final["val_loss"],
        },
        "evaluation": {
            "tinystories_valid_loss": round(full_val, 4),
            "tinystories_valid_tokens": int(len(val)),
            "held_out_sample": {"file": "model/samples/tinystories_valid.txt", "tokens": len(held),
                                "loss": round(held_loss, 4)},
            "baselines": {"unigram": round(unigram, 4), "uniform": round(math.log(loaded.config.vocab_size), 4)},
            "target": TARGET_VALID_LOSS,
        },
        "incontext": {**copying, "targets": INCONTEXT_TARGETS},
        "samples": story_samples(model),
    }


def add_untrained_samples(checkpoint: Path, seed: int) -> None:
    """Put the untrained model's samples first in the training log, as train.py logs them at a first step."""
    log = checkpoint / "training_log.jsonl"
    lines = log.read_text().splitlines()
    if lines and json.loads(lines[0])["step"] == 0:
        return
    torch.manual_seed(seed)  # as train.py does before building the first stage's model
    untrained = GPT(read_config(checkpoint / "config.json"))
    record = {"step": 0, "tokens": 0, "samples": samples(untrained, "cpu", seed)}
    log.write_text(json.dumps(record) + "\n" + "".join(line + "\n" for line in lines))


def incontext_rows(card: dict) -> list[str]:
    ic = card.get("incontext")
    if not ic:
        return ["| not measured | | |"]
    t = ic["targets"]
    return [
        f"| 20 random common words, then the same 20: the first copy (from its second word) | {ic['first_copy']:.2f} | |",
        f"| … the second copy, from its second word (its first word cannot be copied) | **{ic['second_copy']:.2f}** | ≤ {t['second_copy']} |",
        f"| … the second copy, all 20 words | {ic['second_copy_all_words']:.2f} | |",
        f"| an invented name, its first use in a story | {ic['name_first_use']:.2f} | |",
        f"| the same name when it comes back | **{ic['name_later_uses']:.2f}** | ≤ {t['name_later_uses']} |",
        f"| best previous-token head (mean attention on the previous token) | {ic['previous_token_head']['head']}: "
        f"{ic['previous_token_head']['score']:.2f} | ≥ {t['head_score']} |",
        f"| best induction head (mean attention on the token after the earlier occurrence) | "
        f"{ic['induction_head']['head']}: {ic['induction_head']['score']:.2f} | ≥ {t['head_score']} |",
        f"| strongest first-token head (“attention sink”) | {ic['first_token_head']['head']}: "
        f"{ic['first_token_head']['score']:.2f} | |",
    ]


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
        "", "## In-context copying (`python -m model.probes.incontext`, nats per token)", "",
        "| measure | figure | target |", "|---|---|---|",
        *incontext_rows(card),
        "", "## Training data", "",
        "| source | share of training batches | documents (train / held out) | training tokens |",
        "|---|---|---|---|",
    ]
    for name, c in card["corpus"].items():
        lines.append(f"| {name} | {percent(c['weight'])} | {c['train_documents']:,} / {c['val_documents']:,} | {c['train_tokens']:,} |")
    lines += ["", "Licences: " + "; ".join(f"{k}: {v}" for k, v in card["licences"].items()) + ".", ""]
    if card.get("transformations"):
        lines += ["Changes made to the text before training:", ""]
        lines += [f"- {t}" for t in card["transformations"]] + [""]
    lines += ["## Reproduce", ""]
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
    p = argparse.ArgumentParser(prog="python -m model.training.card")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--stage", nargs=3, action="append", required=True, metavar=("DATA", "STEPS", "COMMAND"),
                   help="one training stage, in order: its prepared data folder, its steps, the commands that ran it")
    p.add_argument("--hardware", required=True)
    p.add_argument("--untrained-seed", type=int,
                   help="for a log that lacks one, add the untrained model's samples as its step 0: the first "
                        "stage's model initialised with this seed (its --seed), sampled as training samples")
    p.add_argument("--exported", choices=["best", "last"], default="best",
                   help="which weights of the last stage the run exported (its --export-weights)")
    args = p.parse_args()
    checkpoint = Path(args.checkpoint)
    if args.untrained_seed is not None:
        add_untrained_samples(checkpoint, args.untrained_seed)
    card = build_card(checkpoint, [(Path(d), int(n), c) for d, n, c in args.stage], args.hardware, args.exported)
    (checkpoint / "model_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    (checkpoint / "README.md").write_text(card_markdown(card) + "\n")
    print(json.dumps(card["evaluation"], indent=2))


if __name__ == "__main__":
    main()
