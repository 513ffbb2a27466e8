"""Pre-training: text files -> token files -> a GPT-2 checkpoint and a training log.

Two commands (README has the exact ones that made the default model):

    python -m model.training.train prepare --source NAME:WEIGHT:PATH[,PATH...] [--val NAME:PATH[,PATH...]] --out DATA
    python -m model.training.train run --data DATA --out RUN [--n-layer ... --max-steps ...]

`prepare` writes the token files (model/training/data.py). `run` trains with AdamW, warm-up then cosine decay, gradient clipping and
accumulation, bf16 autocast or fp32, evaluates and samples at intervals,
checkpoints so an interrupted run resumes at the same step with the same data,
and exports the best (or last) weights in the Hugging Face layout. `run --init-from
RUN` starts a further stage from another run's best weights, or from an exported
checkpoint, with its own warm-up and cosine (and its own data mixture if DATA
differs): steps, tokens and the log carry on from where those weights were saved.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.training import augment
from model.training.data import Batches, parse_source, prepare
from model.decode.generate import generate
from model.nets.gpt2 import GPT, GPTConfig
from model.formats.gpt2_checkpoint import save_checkpoint
from model.probes.incontext import head_probe, head_scores, measure
from model.loading import load_model
from model.decode.sampling import SamplingParams
from model.tokenizers.tokenizer import EOT_ID, gpt2_encoding

SAMPLE_PROMPTS = ("Once upon a time", "Tom and his dog", "The little girl")


# ---------------------------------------------------------------- training

def lr_at(step: int, args: argparse.Namespace) -> float:
    """Warm-up, then a cosine to --min-lr; or, with --cooldown F, the peak held until the last F of the
    steps and a straight line down to --min-lr over them (warm-up, stable, decay)."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    if args.cooldown:
        start = args.max_steps * (1 - args.cooldown)
        return args.lr - (args.lr - args.min_lr) * max(0.0, (step - start) / max(1, args.max_steps - start))
    progress = min(1.0, (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


def repeat_share_at(step: int, args: argparse.Namespace, phase: str = "A") -> float:
    """The share of repeated-span rows: --repeat-share at the start, moving linearly to --repeat-share-end;
    with --phase-b-share, --repeat-share until the copying probes pass (phase A), then that share (phase B)."""
    if args.phase_b_share is not None:
        return args.repeat_share if phase == "A" else args.phase_b_share
    end = args.repeat_share if args.repeat_share_end is None else args.repeat_share_end
    return args.repeat_share + (end - args.repeat_share) * min(1.0, step / max(1, args.max_steps))


def copying_passes(ic: dict, args: argparse.Namespace) -> bool:
    """Phase A's goal: an induction head and a cheap second copy (the probes of model/probes/incontext.py)."""
    return ic["induction_head"]["score"] >= args.switch_induction and ic["second_copy"] <= args.switch_copy


def make_optimizer(model: GPT, args: argparse.Namespace) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # biases and layer-norm gains
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95))


def autocast(device: str, dtype: str):
    return torch.autocast(device_type=device, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


@torch.no_grad()
def token_loss(model: GPT, ids: np.ndarray | list[int], n_ctx: int | None = None, batch_size: int = 8) -> float:
    """Mean next-token loss (nats) over a token stream, in non-overlapping windows of n_ctx."""
    n_ctx = n_ctx or model.config.n_ctx
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    windows = [ids[s:s + n_ctx + 1] for s in range(0, len(ids) - 1, n_ctx)]
    full = [w for w in windows if len(w) == n_ctx + 1]
    batches = [torch.stack(full[b:b + batch_size]) for b in range(0, len(full), batch_size)]
    batches += [w[None] for w in windows if len(w) < n_ctx + 1]  # the short last window on its own
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    device = model.wte.weight.device
    for batch in batches:
        batch = batch.to(device)
        logits = model(batch[:, :-1]).float()
        total += float(F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum"))
        count += batch[:, 1:].numel()
    model.train(was_training)
    return total / count


@torch.no_grad()
def evaluate(model: GPT, val: Batches, args: argparse.Namespace, device: str) -> dict[str, float]:
    model.eval()
    losses = {}
    for name in val.names:
        total = 0.0
        for i in range(args.eval_batches):
            x, y = val.get(0, i, args.batch_size, source=name)
            with autocast(device, args.dtype):
                logits = model(x.to(device))
            total += float(F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten()))
        losses[name] = total / args.eval_batches
    model.train()
    return losses


def earlier_run(source: Path, device: str) -> tuple[dict, dict[str, torch.Tensor], list[dict]]:
    """(config, weights, log records up to those weights) of a run folder's best weights,
    or of an exported checkpoint (config.json, weights, training_log.jsonl)."""
    if (source / "best.pt").exists():
        state = torch.load(source / "best.pt", map_location=device, weights_only=True)
        log, upto, config, weights = source / "log.jsonl", state["step"], state["config"], state["model"]
    else:
        loaded = load_model(source, device)
        log, config, weights = source / "training_log.jsonl", loaded.config.to_dict(), loaded.model.state_dict()
        upto = None
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return config, weights, [r for r in records if upto is None or r["step"] <= upto]


def samples(model: GPT, device: str, seed: int, max_new_tokens: int = 48) -> dict[str, str]:
    enc = gpt2_encoding()
    model.eval()
    out = {}
    for prompt in SAMPLE_PROMPTS:
        ids = []
        for step in generate(model, enc.encode_ordinary(prompt), SamplingParams(temperature=0.8),
                             max_new_tokens, seed=seed):
            if step.id == EOT_ID:
                break
            ids.append(step.id)
        out[prompt] = prompt + enc.decode(ids)
    model.train()
    return out


def model_shape(config: dict) -> dict:
    """What two training stages must share: the config less dropout, which may change between them."""
    return {k: v for k, v in config.items() if k != "dropout"}


def save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


def train(args: argparse.Namespace) -> Path:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, n_ctx=args.n_ctx,
                       dropout=args.dropout)
    torch.manual_seed(args.seed)
    model = GPT(config).to(device)
    optimizer = make_optimizer(model, args)
    step, best = 0, {"val_loss": float("inf"), "step": -1}
    phase, passes = "A", 0  # the repeat schedule's phase, and phase A's evaluations in a row that passed
    loss_acc, n_acc = 0.0, 0  # train loss summed since the last evaluation
    nat_sum, nat_n = 0.0, 0  # natural-text rows' summed loss and token count since then
    # a second stage counts on from the first: `step` is this run's, base + step the model's
    base = {"step": 0, "tokens": 0, "elapsed_s": 0.0}
    ckpt, log_path = out / "ckpt.pt", out / "log.jsonl"
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best = state["step"], state["best"]
        loss_acc, n_acc = state["loss_acc"], state["n_acc"]
        base = state.get("base", base)
        phase, passes = state.get("phase", "A"), state.get("passes", 0)
        print(f"resuming from step {step}", file=sys.stderr)
    elif args.init_from:
        source = Path(args.init_from)
        their_config, weights, earlier = earlier_run(source, device)
        shape, theirs = model_shape(config.to_dict()), model_shape(their_config)
        if theirs != shape:
            raise SystemExit(f"--init-from {source}: its model is {theirs}, this run's is {shape}")
        model.load_state_dict(weights)
        last = earlier[-1]
        base = {"step": last["step"], "tokens": last["tokens"], "elapsed_s": last.get("elapsed_s", 0.0)}
        log_path.write_text("".join(json.dumps(r) + "\n" for r in earlier))
        print(f"starting from the weights of {source} at step {base['step']}", file=sys.stderr)
    # the log holds exactly the steps that led to the checkpoint we resume from (its own step's
    # record included: a record is written before the checkpoint of the same step)
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    log_path.write_text("".join(l + "\n" for l in lines if json.loads(l)["step"] <= base["step"] + step))
    if not lines:  # a first stage's first step: what the untrained model writes, for the Data page
        with log_path.open("a") as f:
            f.write(json.dumps({"step": 0, "tokens": 0, "samples": samples(model, device, args.seed)}) + "\n")

    data = Path(args.data)
    train_batches = Batches(data, "train", config.n_ctx, args.seed, args.repeat_random)
    val_batches = Batches(data, "val", config.n_ctx, args.seed)
    tokens_per_step = args.batch_size * args.grad_accum * config.n_ctx
    def batch_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean loss of the scored targets, and each row's summed loss (for natural rows' own mean)."""
        with autocast(device, args.dtype):
            logits = model(x)
        each = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=augment.IGNORE,
                               reduction="none").view_as(y)
        scored = (y != augment.IGNORE).sum()
        return each.sum() / scored, each.detach().sum(1)

    loss_fn = torch.compile(batch_loss) if args.compile else batch_loss
    model.train()
    bar = tqdm(total=args.max_steps, initial=step, unit="step", dynamic_ncols=True, file=sys.stderr)
    t_last = time.time()
    stop_at = min(args.max_steps, step + args.stop_after) if args.stop_after else args.max_steps
    while step < stop_at:
        at = base["step"] + step  # data and dropout carry on from a first stage's, not repeat them
        torch.manual_seed(args.seed + at)  # dropout masks depend on the step alone
        lr = lr_at(step, args)
        for g in optimizer.param_groups:
            g["lr"] = lr
        step_loss = 0.0
        share, span = repeat_share_at(step, args, phase), args.span_a if phase == "A" else args.span_b
        for micro in range(args.grad_accum):
            x, y = train_batches.get(at, micro, args.batch_size, repeat_share=share, span=tuple(span))
            loss, rows = loss_fn(x.to(device), y.to(device))
            (loss / args.grad_accum).backward()
            step_loss += loss.item() / args.grad_accum
            natural = ~(y == augment.IGNORE).any(1)  # rows with a random span leave their first copy unscored
            nat_sum, nat_n = nat_sum + float(rows[natural.to(device)].sum()), nat_n + int(natural.sum()) * y.shape[1]
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        done = {"step": base["step"] + step, "tokens": base["tokens"] + step * tokens_per_step}  # the model's
        loss_acc, n_acc = loss_acc + step_loss, n_acc + 1
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tokens_per_step / max(1e-9, time.time() - t_last):.0f}")
        t_last = time.time()

        record: dict | None = None
        if step % args.eval_interval == 0 or step == args.max_steps:
            val = evaluate(model, val_batches, args, device)
            main = val.get(args.main_val, next(iter(val.values())))
            record = {**done, "train_loss": round(loss_acc / n_acc, 4),
                      "val_loss": round(main, 4), "val_losses": {k: round(v, 4) for k, v in val.items()},
                      "lr": lr, "elapsed_s": round(base["elapsed_s"] + bar.format_dict["elapsed"], 1)}
            if nat_n and share:
                record["train_loss_natural"] = round(nat_sum / nat_n, 4)
            if share:
                record["repeat_share"] = share
            if args.incontext:
                record["incontext"] = measure(model)
                heads = head_scores(model, head_probe(model))
                record["head_scores"] = {k: [[round(float(v), 3) for v in row] for row in getattr(heads, k)]
                                         for k in ("previous_token", "induction")}
            if args.phase_b_share is not None:
                record["phase"] = phase
                if phase == "A":
                    passes = passes + 1 if copying_passes(record["incontext"], args) else 0
                    if passes >= 2 or step >= args.phase_a_max:
                        phase = "B"
                        bar.write(f"step {step}: phase B from here on (repeat share {args.phase_b_share})")
            if args.keep_evaluations:
                (out / "evaluations").mkdir(exist_ok=True)
                save_state(out / "evaluations" / f"step-{done['step']}.pt",
                           {"model": model.state_dict(), "config": config.to_dict(), "step": done["step"]})
            loss_acc, n_acc, nat_sum, nat_n = 0.0, 0, 0.0, 0
            if main < best["val_loss"]:
                best = {"val_loss": main, "step": done["step"]}
                save_state(out / "best.pt", {"model": model.state_dict(), "config": config.to_dict(),
                                             "step": done["step"]})
            bar.write(f"step {step}: train {record['train_loss']:.3f} val {main:.3f} lr {lr:.2e}"
                      + (f" incontext {json.dumps(record['incontext'])}" if args.incontext else ""))
        if step % args.sample_interval == 0 or step == args.max_steps:
            record = record or {**done, "lr": lr}
            record["samples"] = samples(model, device, args.seed)
        if record:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if step % args.checkpoint_interval == 0 or step == stop_at:
            save_state(ckpt, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "step": step, "best": best, "loss_acc": loss_acc, "n_acc": n_acc, "base": base,
                              "phase": phase, "passes": passes})
    bar.close()

    if args.export and step == args.max_steps:
        exported = base["step"] + step
        if args.export_weights == "best":
            state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            exported = state["step"]
        export = Path(args.export)
        save_checkpoint(model.cpu(), export, dtype=torch.float16 if args.export_dtype == "fp16" else torch.float32)
        shutil.copy(log_path, export / "training_log.jsonl")
        print(f"exported step {exported} to {export}", file=sys.stderr)
        return export
    return out


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.training.train", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    pp = sub.add_parser("prepare", help="tokenize text files into train/val token files")
    pp.add_argument("--source", type=parse_source, action="append", required=True,
                    help="NAME:WEIGHT:PATH[,PATH...] (files or folders of .txt)")
    pp.add_argument("--val", action="append", default=[],
                    help="NAME:PATH[,PATH...] held-out documents for that source (else a fraction is held out)")
    pp.add_argument("--val-fraction", type=float, default=0.02)
    pp.add_argument("--invent-names", action="append", default=[], metavar="NAME",
                    help="replace this source's character names by invented ones, consistently within each story")
    pp.add_argument("--seed", type=int, default=1337)
    pp.add_argument("--out", required=True)

    rp = sub.add_parser("run", help="train (or resume) a model on prepared data")
    rp.add_argument("--data", required=True)
    rp.add_argument("--out", required=True, help="run folder: checkpoint, best weights, log")
    rp.add_argument("--export", help="write the best weights here in the Hugging Face layout at the end")
    rp.add_argument("--export-dtype", choices=["fp16", "fp32"], default="fp16")
    rp.add_argument("--export-weights", choices=["best", "last"], default="best",
                    help="the weights with the lowest --main-val loss, or the last step's")
    rp.add_argument("--repeat-share", type=float, default=0.0,
                    help="share of training rows that are a span repeated to fill the row (model/training/augment.py)")
    rp.add_argument("--repeat-share-end", type=float,
                    help="the share at the last step, reached linearly (default: --repeat-share throughout)")
    rp.add_argument("--repeat-random", type=float, default=0.5,
                    help="of those, the share of random frequent tokens (the rest repeat a piece of text)")
    rp.add_argument("--phase-b-share", type=float,
                    help="two phases: --repeat-share until the copying probes pass on two evaluations in a row "
                         "(--switch-induction, --switch-copy; needs --incontext), then this share to the end")
    rp.add_argument("--switch-induction", type=float, default=0.6, help="phase A ends at this induction score ...")
    rp.add_argument("--switch-copy", type=float, default=2.0, help="... and a second copy this cheap (nats)")
    rp.add_argument("--phase-a-max", type=int, default=1200, help="phase A lasts at most this many steps")
    rp.add_argument("--span-a", type=int, nargs=2, default=[4, 64], metavar=("MIN", "MAX"),
                    help="length of a repeated random span in phase A (short ones are learnt first)")
    rp.add_argument("--span-b", type=int, nargs=2, default=[4, 64], metavar=("MIN", "MAX"),
                    help="... and in phase B")
    rp.add_argument("--keep-evaluations", action="store_true",
                    help="save the weights at every evaluation (RUN/evaluations/step-N.pt), to pick one by its probes")
    rp.add_argument("--incontext", action="store_true",
                    help="measure in-context copying (model/probes/incontext.py) at every evaluation")
    rp.add_argument("--n-layer", type=int, default=6)
    rp.add_argument("--n-head", type=int, default=8)
    rp.add_argument("--n-embd", type=int, default=256)
    rp.add_argument("--n-ctx", type=int, default=256)
    rp.add_argument("--dropout", type=float, default=0.0)
    rp.add_argument("--batch-size", type=int, default=16)
    rp.add_argument("--grad-accum", type=int, default=1)
    rp.add_argument("--max-steps", type=int, default=2000)
    rp.add_argument("--lr", type=float, default=2e-3)
    rp.add_argument("--min-lr", type=float, default=1e-4)
    rp.add_argument("--warmup-steps", type=int, default=100)
    rp.add_argument("--cooldown", type=float, default=0.0,
                    help="hold --lr, then fall linearly to --min-lr over this last fraction of the steps "
                         "(default 0: a cosine from the warm-up on)")
    rp.add_argument("--weight-decay", type=float, default=0.1)
    rp.add_argument("--grad-clip", type=float, default=1.0)
    rp.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    rp.add_argument("--seed", type=int, default=1337)
    rp.add_argument("--eval-interval", type=int, default=100)
    rp.add_argument("--eval-batches", type=int, default=8)
    rp.add_argument("--main-val", default="tinystories", help="the source whose validation loss picks the best weights")
    rp.add_argument("--sample-interval", type=int, default=250)
    rp.add_argument("--checkpoint-interval", type=int, default=50)
    rp.add_argument("--stop-after", type=int, default=0,
                    help="train at most this many steps in this sitting, then checkpoint and exit (rerun to resume)")
    rp.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    rp.add_argument("--threads", type=int, default=0)
    rp.add_argument("--compile", action="store_true", help="torch.compile the model (faster steps, slow start)")
    rp.add_argument("--init-from", metavar="RUN",
                    help="start from the best weights of an earlier run folder, or from an exported checkpoint "
                         "with its training_log.jsonl (same model shape); steps and the log carry on from it")

    args = p.parse_args(argv)
    if args.command == "prepare":
        held = {}
        for v in args.val:
            name, _, paths = v.partition(":")
            held[name] = paths.split(",")
        meta = prepare(args.source, held, Path(args.out), args.val_fraction, args.seed, frozenset(args.invent_names))
        print(json.dumps(meta["sources"], indent=2))
    else:
        train(args)


if __name__ == "__main__":
    main()
