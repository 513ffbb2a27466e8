"""Live training: a tiny GPT-2 trained on one text in front of the class, from gibberish to words in minutes.

The net is model/nets/gpt2.py's GPT and the optimiser model/training/train.py's, at the scale of nanoGPT's
character-level Shakespeare (4 layers, 128 wide, 64 bytes of context). It reads bytes
(model/tokenizers/bytes.py), so there is no vocabulary to learn first and any pasted text works.

A run lives in its own process (`python -m model.training.live PLAN.json`, started by app/serving/live.py) with one
torch thread, so the server's model thread keeps its core. PLAN.json holds {"documents", "size", "seed"}. It takes
commands on its standard input and answers with events on its standard output, a JSON object per line:

    {"do": "train", "seconds": S, "steps": N or None}   train until S seconds, N more steps or {"do": "stop"}
    {"do": "export", "path": P, "card": {...}}          write a checkpoint that `--model P` loads
    {"do": "close"}

    {"event": "ready", "parameters", "train_tokens", "val_tokens", "baselines"}
    {"event": "point", "step", "tokens", "train_loss", "val_loss" (or None), "elapsed_s", "tokens_per_s"}
    {"event": "sample", "step", "text"}                 at the steps of SAMPLE_STEPS and where a sitting ends
    {"event": "paused", "step", "why": "stopped" | "time" | "steps"}
    {"event": "exported", "path"}
    {"event": "failed", "message"}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from model.decode.generate import generate
from model.decode.sampling import SamplingParams
from model.formats.gpt2_checkpoint import save_checkpoint
from model.nets.gpt2 import GPT, GPTConfig
from model.tokenizers import bytes as byte_tokens
from model.training.train import make_optimizer

SIZES = {
    "tiny": GPTConfig(n_layer=4, n_head=4, n_embd=128, n_ctx=64, vocab_size=byte_tokens.VOCAB_SIZE),
    "small": GPTConfig(n_layer=6, n_head=6, n_embd=192, n_ctx=64, vocab_size=byte_tokens.VOCAB_SIZE),
}
BATCH_SIZE = 12
LR, WARMUP_STEPS, WEIGHT_DECAY = 1e-3, 50, 0.1
VAL_SHARE = 0.1                # the end of the text, held out
REPORT_EVERY, EVAL_EVERY = 10, 50  # steps between curve points, and between validation losses
EVAL_BATCHES, EVAL_ROWS = 4, 32
SAMPLE_STEPS = (0, 50, 200, 500, 1000, 2000, 5000, 10000, 20000)
SAMPLE_BYTES, SAMPLE_SEED, SAMPLE_TEMPERATURE = 240, 0, 0.8


MIN_BYTES = 1000  # a short poem: learnt by heart, which the held-out tenth's loss then shows


def min_bytes(size: str) -> int:
    """The shortest text a run of this size can use: its held-out tenth must hold a few windows."""
    return max(MIN_BYTES, math.ceil((SIZES[size].n_ctx + 4) / VAL_SHARE))


def split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cut = int(len(ids) * (1 - VAL_SHARE))
    return ids[:cut], ids[cut:]


def unigram_loss(train: np.ndarray, val: np.ndarray) -> float:
    """Nats per byte of a guess that knows only how often each byte comes in the training part (add-one smoothed):
    what a model gets for free before it reads any context."""
    counts = np.bincount(train, minlength=byte_tokens.VOCAB_SIZE).astype(np.float64) + 1
    logp = np.log(counts / counts.sum())
    return float(-logp[val].mean())


class Connection(Protocol):
    def poll(self) -> bool: ...
    def recv(self) -> dict: ...
    def send(self, event: dict) -> None: ...


class Pipes:
    """Commands from standard input (read by a thread, so training can look between steps without waiting) and
    events to standard output; anything else the process prints goes to standard error."""

    def __init__(self) -> None:
        self.events = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)  # a stray print must not break the event stream
        self.commands: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            if line.strip():
                self.commands.put(json.loads(line))
        self.commands.put({"do": "close"})  # the server is gone

    def poll(self) -> bool:
        return not self.commands.empty()

    def recv(self) -> dict:
        return self.commands.get()

    def send(self, event: dict) -> None:
        self.events.write(json.dumps(event) + "\n")
        self.events.flush()


@dataclass
class Point:
    step: int
    tokens: int
    train_loss: float
    val_loss: float | None
    elapsed_s: float
    tokens_per_s: float


class LiveRun:
    """One model learning one text, a step at a time; the caller decides when to stop."""

    def __init__(self, ids: np.ndarray, size: str, seed: int = 0):
        self.config = SIZES[size]
        self.size = size
        torch.manual_seed(seed)
        self.model = GPT(self.config)
        self.optimizer = make_optimizer(self.model, argparse.Namespace(lr=LR, weight_decay=WEIGHT_DECAY))
        train, val = split(ids)
        self.train_ids = torch.from_numpy(train.astype(np.int64))
        self.val_ids = torch.from_numpy(val.astype(np.int64))
        self.batches = torch.Generator().manual_seed(seed)
        self.step = 0
        self.elapsed_s = 0.0  # training time only: a paused run's clock stands still
        self.baselines = {"uniform": math.log(byte_tokens.VOCAB_SIZE), "unigram": unigram_loss(train, val)}

    @property
    def tokens(self) -> int:
        return self.step * BATCH_SIZE * self.config.n_ctx

    def rows(self, ids: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.config.n_ctx
        starts = torch.randint(len(ids) - T - 1, (n,), generator=generator)
        x = torch.stack([ids[s:s + T] for s in starts])
        y = torch.stack([ids[s + 1:s + T + 1] for s in starts])
        return x, y

    def train_step(self) -> float:
        lr = LR * min(1.0, (self.step + 1) / WARMUP_STEPS)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.rows(self.train_ids, BATCH_SIZE, self.batches)
        loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def val_loss(self) -> float:
        """On the same held-out windows every time, so the curve's points compare."""
        self.model.eval()
        fixed = torch.Generator().manual_seed(1)
        total = sum(float(F.cross_entropy(self.model(x).flatten(0, 1), y.flatten()))
                    for x, y in (self.rows(self.val_ids, EVAL_ROWS, fixed) for _ in range(EVAL_BATCHES)))
        self.model.train()
        return total / EVAL_BATCHES

    @torch.no_grad()
    def sample(self) -> str:
        """A document written from scratch (after <|endoftext|>), with the same dice at every step."""
        self.model.eval()
        out = bytearray()
        for step in generate(self.model, [byte_tokens.EOS_ID], SamplingParams(temperature=SAMPLE_TEMPERATURE),
                             SAMPLE_BYTES, seed=SAMPLE_SEED):
            if step.id == byte_tokens.EOS_ID:
                break
            out.append(step.id)
        self.model.train()
        return out.decode("utf-8", errors="replace")

    def export(self, path: Path, card: dict) -> Path:
        """A checkpoint in the Hugging Face layout with its tokenizer.json and card: `--model PATH` loads it."""
        save_checkpoint(self.model, path)
        (path / "tokenizer.json").write_text(byte_tokens.tokenizer_json(), encoding="utf-8")
        (path / "model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        return path


def train_for(run: LiveRun, conn: Connection, seconds: float, steps: int | None) -> None:
    """One sitting: train until the time is up, `steps` more steps are done, or a stop command comes."""
    start_step, start_clock = run.step, run.elapsed_s
    began = time.perf_counter()
    last_step, last_time, losses, rate = run.step, began, [], 0.0
    last_val, last_train = True, 0.0  # whether the last point sent has a validation loss; its training loss
    why = "time"
    while True:
        if conn.poll():
            command = conn.recv()
            if command.get("do") in ("stop", "close"):
                why = "stopped"
                break
        if steps is not None and run.step - start_step >= steps:
            why = "steps"
            break
        if run.elapsed_s - start_clock >= seconds:
            break
        losses.append(run.train_step())
        now = time.perf_counter()
        run.elapsed_s = start_clock + (now - began)
        if run.step % REPORT_EVERY == 0:
            rate = (run.step - last_step) * BATCH_SIZE * run.config.n_ctx / max(1e-9, now - last_time)
            last_val, last_train = run.step % EVAL_EVERY == 0, sum(losses) / len(losses)
            report(run, conn, losses, rate, last_val)
            last_step, last_time, losses = run.step, time.perf_counter(), []
        if run.step in SAMPLE_STEPS:
            conn.send({"event": "sample", "step": run.step, "text": run.sample()})
    if losses or not last_val:  # where the sitting ended, with its validation loss (the same step's point again)
        report(run, conn, losses or [last_train], rate, True)
    if run.step not in SAMPLE_STEPS:
        conn.send({"event": "sample", "step": run.step, "text": run.sample()})
    conn.send({"event": "paused", "step": run.step, "why": why})


def report(run: LiveRun, conn: Connection, losses: list[float], tokens_per_s: float, with_val: bool) -> None:
    point = Point(run.step, run.tokens, round(sum(losses) / len(losses), 4),
                  round(run.val_loss(), 4) if with_val else None, round(run.elapsed_s, 2), round(tokens_per_s))
    conn.send({"event": "point", **point.__dict__})


def serve(conn: Connection, documents: list[str], size: str, seed: int = 0) -> None:
    """A run's process: build the run, then follow commands until "close" (or the parent is gone)."""
    torch.set_num_threads(1)
    try:
        run = LiveRun(byte_tokens.encode_documents(documents), size, seed)
        conn.send({"event": "ready", "parameters": run.model.num_parameters()["total"],
                   "train_tokens": len(run.train_ids), "val_tokens": len(run.val_ids), "baselines": run.baselines})
        untrained = round(run.val_loss(), 4)  # the same on any text: about ln 257, a uniform guess
        conn.send({"event": "point", **Point(0, 0, untrained, untrained, 0.0, 0).__dict__})
        conn.send({"event": "sample", "step": 0, "text": run.sample()})
        while True:
            command = conn.recv()
            if command["do"] == "train":
                train_for(run, conn, command["seconds"], command.get("steps"))
            elif command["do"] == "export":
                run.export(Path(command["path"]), command["card"])
                conn.send({"event": "exported", "path": command["path"]})
            elif command["do"] == "close":
                return
    except BrokenPipeError:  # the server went away: nothing left to tell
        return
    except Exception as e:  # anything else is told to the page, not lost in a dead process
        traceback.print_exc()
        conn.send({"event": "failed", "message": f"{type(e).__name__}: {e}"})


def main(argv: list[str] | None = None) -> None:
    plan = json.loads(Path((argv or sys.argv[1:])[0]).read_text(encoding="utf-8"))
    serve(Pipes(), plan["documents"], plan["size"], plan.get("seed", 0))


if __name__ == "__main__":
    main()
