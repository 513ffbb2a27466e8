"""The sampling chain (temperature -> top-k -> top-p -> choice), seeded generation, and Utf8Stream.

Warpers are checked against straightforward float64 reference computations;
generation runs on a tiny random GPT built here (not the shared conftest one).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from model.decode.generate import generate
from model.nets.gpt2 import GPT, GPTConfig
from model.decode.sampling import (SamplingParams, Utf8Stream, apply_temperature, apply_top_k, apply_top_p, draw,
                            largest, sample_step, warp)
from model.tokenizers.tokenizer import gpt2_encoding


def make_tiny_gpt(seed: int = 0) -> GPT:
    with torch.random.fork_rng():  # leave the global RNG as other tests expect it
        torch.manual_seed(seed)
        return GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, n_ctx=64)).eval()


@pytest.fixture(scope="module")
def gpt() -> GPT:
    return make_tiny_gpt()


# distinct float32 values, so "the k largest" and "the sorted prefix" are well defined
distinct_logits = st.lists(st.floats(-20, 20, width=32), min_size=1, max_size=64, unique=True)
temperatures = st.one_of(st.just(1.0), st.floats(0.05, 5.0))
top_ks = st.integers(0, 70)
top_ps = st.one_of(st.just(1.0), st.floats(0.01, 1.0))


def reference_support(logits: list[float], params: SamplingParams) -> tuple[set[int], torch.Tensor]:
    """The tokens the chain should leave possible, computed plainly in float64,
    and the cumulative masses top-p looked at (to skip cases too close to call)."""
    x = torch.tensor(logits, dtype=torch.float64) / params.temperature
    order = x.argsort(descending=True).tolist()
    if params.top_k:
        order = order[:params.top_k]
    probs = x[order].softmax(dim=0)
    cum = probs.cumsum(dim=0)
    if params.top_p < 1:
        n = min(int((cum < params.top_p).sum()) + 1, len(order))  # smallest prefix reaching p
        order = order[:n]
    return set(order), cum


def support_of(warped: torch.Tensor) -> set[int]:
    return set(torch.isfinite(warped).nonzero().flatten().tolist())


# --- warpers ---------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(distinct_logits, temperatures, top_ks, top_ps)
def test_warp_matches_reference_and_sums_to_one(logits, temperature, top_k, top_p):
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    # dividing by T in float32 may merge two close logits into a tie; keep to cases where it does not
    assume(len(set(apply_temperature(torch.tensor(logits), temperature).tolist())) == len(logits))
    expected, cum = reference_support(logits, params)
    if top_p < 1:  # float32 and float64 may disagree when a cumulative mass sits right at p
        assume(bool(((cum - top_p).abs() > 1e-5).all()))
    warped = warp(torch.tensor(logits), params)
    assert support_of(warped) == expected
    assert warped.softmax(dim=-1).sum().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.tensor(logits).softmax(dim=-1).sum().item() == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=200, deadline=None)
@given(distinct_logits, st.integers(1, 64))
def test_top_k_keeps_exactly_k(logits, k):
    warped = apply_top_k(torch.tensor(logits), k)
    kept = support_of(warped)
    assert len(kept) == min(k, len(logits))
    assert kept == set(torch.tensor(logits).topk(min(k, len(logits))).indices.tolist())
    step = sample_step(torch.tensor(logits), SamplingParams(top_k=k), torch.Generator().manual_seed(0))
    assert step.support == min(k, len(logits)) and step.id in kept


@settings(max_examples=300, deadline=None)
@given(distinct_logits, st.floats(1e-3, 1.0, exclude_max=True))
def test_top_p_keeps_smallest_prefix_reaching_p(logits, p):
    expected, cum = reference_support(logits, SamplingParams(top_p=p))
    assume(bool(((cum - p).abs() > 1e-5).all()))
    assert support_of(apply_top_p(torch.tensor(logits), p)) == expected


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])  # flat to peaked: nuclei of ~all, some, one token
def test_top_p_over_the_full_vocabulary(scale):
    """50k logits: the nucleus search widens past its first 256 candidates. Single tokens
    weigh little here, so float32 sums may place the edge a few tokens off: allow 1e-5 of mass."""
    logits = torch.randn(50257, generator=torch.Generator().manual_seed(1)) * scale
    order = logits.argsort(descending=True).tolist()
    cum = logits.double()[order].softmax(dim=0).cumsum(dim=0)
    for p in (0.1, 0.5, 0.9, 0.99):
        kept = support_of(apply_top_p(logits, p))
        n = len(kept)
        assert kept == set(order[:n])  # a prefix of the sorted distribution...
        assert cum[n - 1] >= p - 1e-5  # ...that reaches p...
        assert n == 1 or cum[n - 2] < p + 1e-5  # ...and is the smallest that does


def test_top_p_one_keeps_everything():
    logits = torch.randn(100)
    assert torch.equal(apply_top_p(logits, 1.0), logits)


def test_warpers_work_on_batches_row_by_row():
    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(2))
    for fn in (lambda x: apply_top_k(x, 7), lambda x: apply_top_p(x, 0.6)):
        batched = fn(logits)
        for row in range(4):
            assert torch.equal(batched[row], fn(logits[row]))


# --- temperature and greedy ------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1e-4, 1e-30, 1e-40, 1e-46, 1e-300])
@pytest.mark.parametrize("offset", [0.0, -80.0])  # GPT-2's logits are often all negative
def test_tiny_temperature_picks_argmax(temperature, offset):
    """As T -> 0 the distribution becomes the argmax; a tiny T must not overflow into nan."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(1000, generator=gen) * 5 + offset
        step = sample_step(logits, SamplingParams(temperature=temperature), gen)
        assert step.id == int(logits.argmax())
        assert step.prob == pytest.approx(1.0)
        assert step.after[0].id == step.id


def test_temperature_zero_is_greedy(gpt):
    logits = torch.randn(50257, generator=torch.Generator().manual_seed(3))
    step = sample_step(logits, SamplingParams(temperature=0))
    assert step.id == int(logits.argmax()) and step.prob == 1.0 and step.support == 1
    assert [c.id for c in step.after] == [step.id]
    # generate() at T = 0 follows the argmax of a plain forward over the whole text
    prompt = [464, 2068, 7586]
    ids = [s.id for s in generate(gpt, prompt, SamplingParams(temperature=0), max_new_tokens=12)]
    text = list(prompt)
    with torch.inference_mode():
        for token in ids:
            assert token == int(gpt(torch.tensor([text]))[0, -1].argmax())
            text.append(token)


def test_temperature_scales_logits():
    logits = torch.tensor([2.0, 1.0, 0.0])
    for t in (0.5, 2.0):
        warped = warp(logits, SamplingParams(temperature=t))
        assert torch.equal(warped, logits / t)  # the logits shown after the warpers are logit / T


# --- the draw --------------------------------------------------------------------------------

def test_draws_follow_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.0, 0.2])
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor(draw(probs.expand(40_000, -1), [gen] * 40_000))  # 40k rows, one number each
    freq = torch.bincount(ids, minlength=4).float() / len(ids)
    assert freq[2] == 0  # probability 0 is never drawn
    assert torch.allclose(freq, probs, atol=0.01)


def test_draws_never_leave_the_support():
    gen = torch.Generator().manual_seed(4)
    for _ in range(200):
        logits = torch.randn(500, generator=gen)
        params = SamplingParams(temperature=1.5, top_k=5, top_p=0.5)
        warped = warp(logits, params)
        assert torch.isfinite(warped[draw(warped.softmax(-1)[None], [gen])[0]])


def test_same_seed_same_tokens(gpt):
    params = SamplingParams(temperature=0.9, top_k=100, top_p=0.95)
    run = lambda seed: [s.id for s in generate(gpt, [1, 2, 3], params, 30, seed=seed)]  # noqa: E731
    assert run(7) == run(7)
    assert run(7) != run(8)
    # the seed alone decides: the global RNG does not leak in
    torch.manual_seed(123)
    a = run(9)
    torch.manual_seed(456)
    assert run(9) == a


# --- Step --------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=0.7, top_k=20),
                                    SamplingParams(temperature=1.3, top_p=0.8), SamplingParams(temperature=0)])
def test_step_distributions_are_sorted_and_consistent(params):
    logits = torch.randn(50257, generator=torch.Generator().manual_seed(5)) * 3
    step = sample_step(logits, params, torch.Generator().manual_seed(6), n=15)
    raw = logits.softmax(-1)
    assert len(step.before) == 15 and 1 <= len(step.after) <= 15
    for candidates in (step.before, step.after):
        probs = [c.prob for c in candidates]
        assert probs == sorted(probs, reverse=True)
        assert len({c.id for c in candidates}) == len(candidates)
        assert all(c.prob > 0 for c in candidates)
    # before: the model's own distribution, with its logits as given
    assert [c.id for c in step.before] == raw.topk(15).indices.tolist()
    for c in step.before:
        assert c.prob == pytest.approx(float(raw[c.id]), rel=1e-5) and c.logit == float(logits[c.id])
    # after: inside the support, probabilities renormalised over it (so never below before's)
    assert len(step.after) == min(15, step.support)
    assert sum(c.prob for c in step.after) <= 1 + 1e-5
    for c in step.after:
        if params.temperature == 1:
            assert c.prob >= float(raw[c.id]) * (1 - 1e-5)
    assert step.raw_prob == pytest.approx(float(raw[step.id]), rel=1e-5)
    assert step.id in {c.id for c in step.after} or step.prob <= step.after[-1].prob
    assert step.entropy == pytest.approx(float(-(raw * raw.log()).sum()), rel=1e-4)


def test_forced_token_is_reported_not_drawn():
    logits = torch.tensor([1.0, 2.0, 3.0])
    step = sample_step(logits, SamplingParams(top_k=1), forced=0)
    assert step.id == 0 and step.prob == 0.0 and step.raw_prob == pytest.approx(float(logits.softmax(-1)[0]))


# --- invalid parameters ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    (dict(temperature=-0.5), "temperature"),
    (dict(temperature=math.nan), "temperature"),
    (dict(temperature=math.inf), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_p=math.nan), "top_p"),
    (dict(top_k=-1), "top_k"),
])
def test_invalid_params_raise_readable_errors(kwargs, words):
    with pytest.raises(ValueError, match=words) as err:
        SamplingParams(**kwargs)
    value = str(next(iter(kwargs.values())))
    assert value in str(err.value)  # the message says what was given


# --- Utf8Stream --------------------------------------------------------------------------------

TEXT = "Café 👩‍🔬 says “hi” in 日本語 and 한국어 🎉🇫🇷 ok"


def test_utf8_stream_rebuilds_text_token_by_token():
    enc = gpt2_encoding()
    pieces = [enc.decode_single_token_bytes(t) for t in enc.encode(TEXT)]
    assert any(_cuts_a_character(p) for p in pieces)  # the test needs tokens that split characters
    stream = Utf8Stream()
    outputs = [stream.push(p) for p in pieces] + [stream.flush()]
    assert all("\ufffd" not in out for out in outputs)
    assert "".join(outputs) == TEXT


def test_utf8_stream_byte_by_byte():
    stream = Utf8Stream()
    outputs = [stream.push(bytes([b])) for b in TEXT.encode()]
    assert "".join(outputs) + stream.flush() == TEXT
    assert all(len(out) <= 1 for out in outputs)  # each character as soon as its last byte arrives


def test_utf8_stream_holds_back_a_partial_character():
    stream = Utf8Stream()
    assert stream.push(b"\xe2\x80") == ""
    assert stream.push(b"\x99") == "\u2019"
    assert stream.push(b"ok \xf0\x9f") == "ok "
    assert stream.flush() == "\ufffd"  # an unfinished character at the very end is shown as such


def test_utf8_stream_replaces_bytes_that_never_form_a_character():
    stream = Utf8Stream()
    assert stream.push(b"a\xffb") == "a\ufffdb"


def _cuts_a_character(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 8), k=st.integers(1, 40), seed=st.integers(0, 10_000), ties=st.booleans(),
       tail=st.integers(0, 127))
def test_largest_finds_what_topk_finds(rows: int, k: int, seed: int, ties: bool, tail: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 128 * 200 + tail, generator=g)
    if ties:  # many equal values, and the largest ones in the tail after the last whole block
        x = (x * 2).round()
        x[:, -tail or -1] = 100.0
    values, ids = largest(x, k)
    ref_values, _ = torch.topk(x, k, dim=-1)
    assert torch.equal(values, ref_values)
    assert torch.equal(x.gather(-1, ids), values)  # the ids point at those values
    assert all(len(set(r)) == k for r in ids.tolist())  # each position once
