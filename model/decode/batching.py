"""Continuous batching: many independent streams decoded together, one forward per step.

Each sequence keeps its own sampling settings, its own seeded generator and its
own row of one shared KV cache. A step feeds every running row its last token
in one forward (rows of different lengths, masked per row), then samples all rows
with model/sampling.sample_steps: row by row in effect, each with its own settings
and generator (one stream runs the same code with one row), so a row's tokens are
those that model/generate.generate() gives for the same prompt, seed and settings. (Up to
float rounding: a batched matmul, or attention over a longer masked row, may
differ from the one-row computation in the last bits, which can only flip a
token at a near-tie; in tests on CPU every token matches.)

Sequences join and leave between steps. Running rows are kept packed at the
front of the cache (a leaving row is filled with the last one), so a step only
computes over live rows. The cache grows by doubling as needed and is freed
when the decoder falls idle.

Not thread-safe: meant to be owned and driven by one thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from model.nets.kv_cache import KVCache
from model.nets.net import CausalLM
from model.decode.sampling import SamplingParams, Step, sample_step, sample_steps


SAMPLE_ROWS = 8  # rows sampled together (on a 2-core CPU, 8 rows x 50k logits beat 1, 4 and 40 rows)


class Event(NamedTuple):
    seq_id: int
    step: Step
    finished: bool
    reason: str | None  # when finished: "length" (max_new_tokens reached) or "context" (context full)


@dataclass(eq=False)
class _Sequence:
    id: int
    prompt: list[int]      # fed on the first step, then dropped
    params: SamplingParams
    generator: torch.Generator
    n_top: int
    left: int              # tokens still to produce
    end_reason: str        # why it will stop once `left` runs out
    last: int = -1         # the latest token, fed on the next step


class BatchDecoder:
    def __init__(self, model: CausalLM, max_batch: int = 64):
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self.device = model.wte.weight.device
        self._rows: list[_Sequence] = []          # running; _rows[i] lives in cache row i
        self._waiting: deque[_Sequence] = deque()  # added, prompt not yet fed
        self._cache: KVCache | None = None
        self._next_id = 0

    @property
    def active(self) -> int:
        """Sequences in flight (running or waiting): step() has work while this is > 0."""
        return len(self._rows) + len(self._waiting)

    @property
    def running(self) -> int:
        """Sequences holding a cache row; the rest wait for one (at most max_batch run)."""
        return len(self._rows)

    def add(self, prompt: Sequence[int], params: SamplingParams, max_new_tokens: int,
            seed: int | None = None, n_top: int = 10) -> int:
        """Queue a sequence; its prompt is fed and its first token drawn on a coming step().

        Beyond max_batch running sequences it waits, first come first served, for a row.
        Returns its id. Raises ValueError for what would otherwise fail inside a shared step.
        """
        cfg = self.model.config
        prompt = list(prompt)
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        if len(prompt) >= cfg.n_ctx:
            raise ValueError(f"a prompt of {len(prompt)} tokens leaves no room in the context of {cfg.n_ctx}")
        if not all(0 <= t < cfg.vocab_size for t in prompt):
            raise ValueError(f"token ids must be in [0, {cfg.vocab_size})")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
        if n_top < 0:
            raise ValueError(f"n_top must be ≥ 0, got {n_top}")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
        room = cfg.n_ctx - len(prompt)  # as in generate(): prompt + new tokens fit the context
        seq = _Sequence(self._next_id, prompt, params, generator, n_top, left=min(max_new_tokens, room),
                        end_reason="length" if max_new_tokens <= room else "context")
        self._next_id += 1
        self._waiting.append(seq)
        return seq.id

    @torch.inference_mode()  # the cache was made in inference mode, so only there can rows move
    def cancel(self, seq_id: int) -> bool:
        """Drop a sequence now, freeing its row. False if it is not in flight (e.g. already finished)."""
        for i, seq in enumerate(self._rows):
            if seq.id == seq_id:
                self._remove(i)
                return True
        for seq in self._waiting:
            if seq.id == seq_id:
                self._waiting.remove(seq)
                self._release_if_idle()
                return True
        return False

    @torch.inference_mode()
    def step(self) -> list[Event]:
        """One new token for every sequence in flight that has a row.

        Running rows share one forward; then waiting sequences take the free rows,
        each fed its prompt alone (prompts differ in length). Finished sequences are
        reported once, with finished=True, and leave.
        """
        events: list[Event] = []
        if self._rows:
            n = len(self._rows)
            idx = torch.tensor([[s.last] for s in self._rows], dtype=torch.long, device=self.device)
            logits = self.model(idx, cache=self._cache.view(0, n), last_only=True)[:, -1]
            # a few rows at a time, each with its own settings and generator: rows x vocabulary
            # stays in cache, where all rows at once would stream megabytes through memory
            for a in range(0, n, SAMPLE_ROWS):
                rows = self._rows[a:a + SAMPLE_ROWS]
                steps = sample_steps(logits[a:a + SAMPLE_ROWS], [s.params for s in rows],
                                     [s.generator for s in rows], [s.n_top for s in rows])
                events += [self._advance(s, step) for s, step in zip(rows, steps)]
            # leave from the back, so the rows moved into the gaps are live ones
            for i in reversed(range(n)):
                if self._rows[i].left == 0:
                    self._remove(i)
        while self._waiting and len(self._rows) < self.max_batch:
            seq = self._waiting.popleft()
            row = len(self._rows)
            self._reserve(row + 1, len(seq.prompt) + seq.left - 1)  # the last token is never fed
            self._cache.lengths[row] = 0
            idx = torch.tensor([seq.prompt], dtype=torch.long, device=self.device)
            logits = self.model(idx, cache=self._cache.view(row, row + 1), last_only=True)[0, -1]
            seq.prompt = []
            events.append(self._sample(seq, logits))
            if seq.left:
                self._rows.append(seq)
        self._release_if_idle()
        return events

    def _sample(self, seq: _Sequence, logits: torch.Tensor) -> Event:
        return self._advance(seq, sample_step(logits, seq.params, seq.generator, n=seq.n_top))

    @staticmethod
    def _advance(seq: _Sequence, step: Step) -> Event:
        seq.last = step.id
        seq.left -= 1
        return Event(seq.id, step, seq.left == 0, seq.end_reason if seq.left == 0 else None)

    def _remove(self, row: int) -> None:
        """Free a row, keeping running rows packed: the last row moves into the gap."""
        last = len(self._rows) - 1
        if row != last:
            c = self._cache
            length = int(c.lengths[last])  # copy only the used part
            c.k[:, row, :, :length] = c.k[:, last, :, :length]
            c.v[:, row, :, :length] = c.v[:, last, :, :length]
            c.lengths[row] = length
            self._rows[row] = self._rows[last]
        self._rows.pop()
        self._release_if_idle()

    def _reserve(self, rows: int, length: int) -> None:
        """Make the shared cache hold at least rows x length, growing by doubling so copies stay rare."""
        c = self._cache
        if c is not None and c.batch_size >= rows and c.max_len >= length:
            return
        old_rows, old_len = (c.batch_size, c.max_len) if c is not None else (0, 0)
        new_rows = old_rows if old_rows >= rows else min(self.max_batch, max(rows, 2 * old_rows))
        new_len = old_len if old_len >= length else min(self.model.config.n_ctx, max(length, 2 * old_len))
        new = self.model.new_cache(new_rows, new_len, device=self.device)
        if c is not None:
            n = len(self._rows)
            new.k[:, :n, :, :old_len] = c.k[:, :n]
            new.v[:, :n, :, :old_len] = c.v[:, :n]
            new.lengths[:n] = c.lengths[:n]
        self._cache = new

    def _release_if_idle(self) -> None:
        # a classroom's worth of rows can take gigabytes: give them back between bursts
        if not self._rows and not self._waiting:
            self._cache = None
