"""BatchDecoder against single-stream generate(): same prompt, seed and settings, same tokens,
whoever else shares the batch, whenever they join or leave."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import torch

from model.decode.batching import BatchDecoder
from model.decode.generate import generate
from model.nets.gpt2 import GPT, GPTConfig
from model.decode.sampling import SamplingParams

N_CTX = 64


@pytest.fixture(scope="module")
def gpt() -> GPT:
    with torch.random.fork_rng():  # leave the global RNG as other tests expect it
        torch.manual_seed(0)
        return GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, n_ctx=N_CTX)).eval()


@dataclass
class Request:
    prompt: list[int]
    params: SamplingParams
    max_new_tokens: int
    seed: int
    n_top: int = 5
    ids: list[int] = field(default_factory=list)
    steps: list = field(default_factory=list)
    reason: str | None = None


def single_stream(gpt: GPT, r: Request) -> list:
    return list(generate(gpt, r.prompt, r.params, r.max_new_tokens, seed=r.seed, n=r.n_top))


def run(decoder: BatchDecoder, schedule: dict[int, list[Request]],
        cancel_at: dict[int, list[Request]] | None = None) -> dict[int, Request]:
    """Step until done; requests join before the step numbered in `schedule`, cancels happen likewise."""
    by_id: dict[int, Request] = {}
    ids_of: dict[int, int] = {}  # id(request) -> seq_id
    t = 0
    while decoder.active or any(k >= t for k in schedule):
        for r in schedule.get(t, []):
            seq_id = decoder.add(r.prompt, r.params, r.max_new_tokens, seed=r.seed, n_top=r.n_top)
            by_id[seq_id], ids_of[id(r)] = r, seq_id
        for r in (cancel_at or {}).get(t, []):
            assert decoder.cancel(ids_of[id(r)])
        assert decoder.running <= decoder.max_batch
        for seq_id, step, finished, reason in decoder.step():
            r = by_id[seq_id]
            assert r.reason is None, "no events after a sequence finished"
            r.ids.append(step.id)
            r.steps.append(step)
            r.reason = reason if finished else None
            assert finished == (reason is not None)
        t += 1
    return by_id


def rand_prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(50257) for _ in range(n)]


PARAMS = [
    SamplingParams(temperature=0),
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=0.7, top_k=5),
    SamplingParams(temperature=1.3, top_p=0.9),
    SamplingParams(temperature=0.8, top_k=50, top_p=0.8),
    SamplingParams(temperature=2.0, top_k=3),
]


def test_batched_tokens_match_single_stream(gpt):
    rng = random.Random(0)
    reqs = [Request(rand_prompt(rng, n), PARAMS[i % len(PARAMS)], m, seed=100 + i)
            for i, (n, m) in enumerate([(1, 20), (9, 5), (30, 12), (4, 1), (17, 25), (50, 100), (2, 8), (12, 30)])]
    schedule = {0: reqs[:2], 1: reqs[2:4], 3: [reqs[4]], 4: [reqs[5], reqs[6]], 9: [reqs[7]]}
    run(BatchDecoder(gpt, max_batch=8), schedule)
    for r in reqs:
        alone = single_stream(gpt, r)
        assert r.ids == [s.id for s in alone]
        assert len(r.ids) == min(r.max_new_tokens, N_CTX - len(r.prompt))
        assert r.reason == ("context" if r.max_new_tokens > N_CTX - len(r.prompt) else "length")
        # the distributions shown agree too (to float rounding)
        for got, want in zip(r.steps, alone):
            assert [c.id for c in got.after] == [c.id for c in want.after]
            assert got.prob == pytest.approx(want.prob, rel=1e-4, abs=1e-6)
            assert got.support == want.support


def test_random_schedule_with_cancels(gpt):
    """Requests join at random steps with random settings; some are cancelled part-way."""
    rng = random.Random(1)
    reqs, schedule, cancel_at = [], {}, {}
    for i in range(14):
        params = SamplingParams(temperature=rng.choice([0, 0.5, 1.0, 1.5]), top_k=rng.choice([0, 1, 10]),
                                top_p=rng.choice([1.0, 0.95, 0.5]))
        r = Request(rand_prompt(rng, rng.randint(1, 40)), params, rng.randint(1, 30), seed=rng.randrange(2**32))
        start = rng.randint(0, 25)
        reqs.append(r)
        schedule.setdefault(start, []).append(r)
        if i % 4 == 3:
            cancel_at.setdefault(start + rng.randint(1, 5), []).append(r)
    decoder = BatchDecoder(gpt, max_batch=6)
    run(decoder, schedule, cancel_at)
    cancelled = [r for rs in cancel_at.values() for r in rs]
    for r in reqs:
        alone = [s.id for s in single_stream(gpt, r)]
        if r in cancelled:
            assert r.reason is None and r.ids == alone[:len(r.ids)] and len(r.ids) < len(alone)
        else:
            assert r.ids == alone
    assert decoder.active == 0 and decoder._cache is None  # rows given back when idle


def test_same_seed_in_one_batch_gives_same_tokens(gpt):
    """Two identical requests side by side, a third unrelated one: the twins agree token for token."""
    twin = dict(prompt=[10, 20, 30], params=SamplingParams(temperature=1.0, top_p=0.9), max_new_tokens=20, seed=5)
    a, b = Request(**twin), Request(**twin)
    other = Request([7] * 25, SamplingParams(temperature=1.0), 20, seed=6)
    run(BatchDecoder(gpt), {0: [a, other], 3: [b]})
    assert a.ids == b.ids and len(a.ids) == 20


def test_max_batch_queues_the_rest(gpt):
    rng = random.Random(2)
    reqs = [Request(rand_prompt(rng, 3 + i), PARAMS[i % len(PARAMS)], 4 + i, seed=i) for i in range(5)]
    decoder = BatchDecoder(gpt, max_batch=2)
    ids = [decoder.add(r.prompt, r.params, r.max_new_tokens, seed=r.seed, n_top=r.n_top) for r in reqs]
    assert decoder.active == 5 and decoder.running == 0
    first = decoder.step()
    assert {e.seq_id for e in first} == set(ids[:2])  # first come, first served
    assert decoder.running == 2 and decoder.active == 5
    by_id = {i: r for i, r in zip(ids, reqs)}
    for e in first:
        by_id[e.seq_id].ids.append(e.step.id)
    while decoder.active:
        events = decoder.step()
        # a finished row's last token and its successor's first come in the same step
        assert decoder.running <= 2 and sum(not e.finished for e in events) <= 2
        for e in events:
            by_id[e.seq_id].ids.append(e.step.id)
    assert decoder._cache is None
    for r in reqs:
        assert r.ids == [s.id for s in single_stream(gpt, r)]


def test_cancel_frees_the_row(gpt):
    decoder = BatchDecoder(gpt, max_batch=2)
    a = decoder.add([1, 2, 3], SamplingParams(temperature=0), 50)
    b = decoder.add([4, 5], SamplingParams(temperature=0), 50)
    c = decoder.add([6], SamplingParams(temperature=0), 50)
    decoder.step()
    assert decoder.running == 2 and decoder.active == 3
    assert decoder.cancel(a)
    assert decoder.running == 1
    assert {e.seq_id for e in decoder.step()} == {b, c}  # c took a's row
    assert decoder.cancel(c) and decoder.cancel(b)
    assert not decoder.cancel(b) and not decoder.cancel(12345)
    assert decoder.active == 0 and decoder.step() == []
    # a waiting sequence can be cancelled before it ever runs
    w = [decoder.add([1], SamplingParams(), 5) for _ in range(3)]
    assert decoder.cancel(w[2]) and decoder.active == 2
    assert {e.seq_id for e in decoder.step()} == set(w[:2])


def test_rows_are_reused(gpt):
    """Many short requests through a small batch: the cache never grows past max_batch rows."""
    decoder = BatchDecoder(gpt, max_batch=3)
    for i in range(12):
        decoder.add([i + 1] * (i % 5 + 1), SamplingParams(temperature=0.5), max_new_tokens=i % 4 + 1, seed=i)
        decoder.step()
        assert decoder._cache is None or decoder._cache.batch_size <= 3
    while decoder.active:
        decoder.step()


@pytest.mark.parametrize("kwargs, words", [
    (dict(prompt=[]), "at least one token"),
    (dict(prompt=[1] * N_CTX), "no room"),
    (dict(prompt=[50257]), "token ids"),
    (dict(prompt=[-1]), "token ids"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(n_top=-1), "n_top"),
])
def test_add_rejects_what_would_break_a_shared_step(gpt, kwargs, words):
    decoder = BatchDecoder(gpt)
    args = dict(prompt=[1, 2], params=SamplingParams(), max_new_tokens=5) | kwargs
    with pytest.raises(ValueError, match=words):
        decoder.add(**args)
    assert decoder.active == 0


def test_max_batch_must_be_positive(gpt):
    with pytest.raises(ValueError, match="max_batch"):
        BatchDecoder(gpt, max_batch=0)
