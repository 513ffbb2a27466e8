"""Our GPT-2 against the reference: transformers' GPT2LMHeadModel.

A randomly initialised GPT2LMHeadModel is saved to disk, read back with our
loader, and both models run on the same tokens: logits, every hidden state
and every attention pattern must agree. The KV cache and the Recorder are
checked against our own full, plain forward.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from model.nets.gpt2 import GPT, GPTConfig
from model.nets.speed import FastLinear, speed_up
from model.loading import load_model
from model.nets.record import Recorder, all_names

TOL = dict(atol=1e-4, rtol=1e-4)
SHAPES = {  # name: (n_layer, n_head, n_embd, n_ctx)
    "tiny": (2, 4, 64, 64),
    "124M": (12, 12, 768, 1024),
}


def reference_model(n_layer: int, n_head: int, n_embd: int, n_ctx: int, seed: int = 0) -> GPT2LMHeadModel:
    """A GPT2LMHeadModel with every parameter random, biases and layer norms included."""
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_ctx, vocab_size=50257,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        attn_implementation="eager")  # eager: the only one that returns attentions
    gen = torch.Generator().manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            # std 0.05 rather than GPT-2's 0.02: sharper attention patterns, yet a residual
            # stream small enough that fp32 rounding stays well inside TOL over 12 layers
            is_ln_weight = name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
            p.copy_(1 + 0.1 * noise if is_ln_weight else 0.05 * noise)
    return model


def save_bin(hf: GPT2LMHeadModel, directory: Path) -> Path:
    """Save the way the original gpt2 hub files were: GPT2Model keys (no "transformer."),
    the causal-mask buffers included, as a pickle-era pytorch_model.bin."""
    directory.mkdir()
    hf.config.to_json_file(directory / "config.json")
    state = hf.transformer.state_dict()
    n_ctx = hf.config.n_positions
    for i in range(hf.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.ones(n_ctx, n_ctx, dtype=torch.uint8).tril().view(1, 1, n_ctx, n_ctx)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, directory / "pytorch_model.bin")
    return directory


@pytest.fixture(scope="module", params=[
    "tiny", pytest.param("124M", marks=pytest.mark.slow),
])
def reference(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(transformers model, its safetensors directory, its pytorch_model.bin directory)."""
    hf = reference_model(*SHAPES[request.param])
    root = tmp_path_factory.mktemp(f"ref-{request.param}")
    hf.save_pretrained(root / "safetensors")
    yield hf, root / "safetensors", save_bin(hf, root / "bin")
    shutil.rmtree(root)  # 1 GB for 124M: pytest would keep it around for three runs


def assert_matches_reference(ours: GPT, hf: GPT2LMHeadModel, ids: torch.Tensor) -> None:
    L = ours.config.n_layer
    rec = Recorder(["blocks.*.resid_pre", "blocks.*.attn.pattern", "ln_final"])
    with torch.no_grad():
        want = hf(ids, output_hidden_states=True, output_attentions=True)
        plain = ours(ids)  # scaled_dot_product_attention
        recorded = ours(ids, rec=rec)  # explicit softmax, to record the pattern
    assert len(want.hidden_states) == L + 1 and len(want.attentions) == L
    torch.testing.assert_close(plain, want.logits, **TOL)
    torch.testing.assert_close(recorded, want.logits, **TOL)
    # HF's hidden_states: the input of each block, then ln_f of the last block's output
    for i in range(L):
        torch.testing.assert_close(rec[f"blocks.{i}.resid_pre"], want.hidden_states[i], **TOL)
        torch.testing.assert_close(rec[f"blocks.{i}.attn.pattern"], want.attentions[i], **TOL)
    torch.testing.assert_close(rec["ln_final"], want.hidden_states[L], **TOL)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_matches_transformers(reference, fmt: str) -> None:
    hf, st_dir, bin_dir = reference
    loaded = load_model(st_dir if fmt == "safetensors" else bin_dir)
    c = hf.config
    assert loaded.config == GPTConfig(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, n_ctx=c.n_positions,
                                      vocab_size=c.vocab_size, layer_norm_epsilon=c.layer_norm_epsilon)
    assert loaded.dtype == torch.float32 and not loaded.model.training
    ids = torch.randint(0, c.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    assert_matches_reference(loaded.model, hf, ids)


# --- KV cache: incremental decoding against one full forward ---------------------------------

def tokens(n: int, seed: int, vocab: int = 50257) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_cache_steps_match_full_forward(tiny_model: GPT) -> None:
    ids = tokens(12, seed=2)[None]
    rec_full = Recorder(["blocks.*.attn.pattern"])
    full = tiny_model(ids, rec=rec_full)
    cache = tiny_model.new_cache(1)
    prefill = 4
    torch.testing.assert_close(tiny_model(ids[:, :prefill], cache=cache), full[:, :prefill], atol=1e-5, rtol=1e-5)
    for t in range(prefill, ids.shape[1]):
        rec = Recorder(["blocks.*.attn.pattern"])
        step = tiny_model(ids[:, t:t + 1], cache=cache, rec=rec, last_only=True)
        torch.testing.assert_close(step, full[:, t:t + 1], atol=1e-5, rtol=1e-5)
        for i in range(tiny_model.config.n_layer):  # the new query's row of the full pattern
            want = rec_full[f"blocks.{i}.attn.pattern"][:, :, t:t + 1, :t + 1]
            torch.testing.assert_close(rec[f"blocks.{i}.attn.pattern"], want, atol=1e-6, rtol=1e-5)
    assert cache.lengths.tolist() == [ids.shape[1]]


@torch.no_grad()
def test_cache_rows_of_different_lengths(tiny_model: GPT) -> None:
    seqs = [tokens(10, seed=3), tokens(7, seed=4)]
    starts = [5, 3]
    fulls = [tiny_model(s[None])[0] for s in seqs]

    cache = tiny_model.new_cache(2)
    # right-pad the shorter prompt, then rewind its length: its padding keys are masked, then overwritten
    prompt = torch.stack([seqs[0][:5], torch.cat([seqs[1][:3], torch.zeros(2, dtype=torch.long)])])
    logits = tiny_model(prompt, cache=cache)
    cache.lengths[1] = starts[1]
    for r in range(2):
        torch.testing.assert_close(logits[r, :starts[r]], fulls[r][:starts[r]], atol=1e-5, rtol=1e-5)

    for k in range(4):  # both rows step together, each at its own position
        pos = [s + k for s in starts]
        step = tiny_model(torch.tensor([[seqs[r][pos[r]]] for r in range(2)]), cache=cache)
        for r in range(2):
            torch.testing.assert_close(step[r, 0], fulls[r][pos[r]], atol=1e-5, rtol=1e-5)
    assert cache.lengths.tolist() == [9, 7]

    # a view of one row carries on alone, writing into the shared cache
    solo = cache.view(0, 1)
    torch.testing.assert_close(tiny_model(seqs[0][9:10][None], cache=solo)[0, 0], fulls[0][9], atol=1e-5, rtol=1e-5)
    assert cache.lengths.tolist() == [10, 7]


# --- Recording ----------------------------------------------------------------------------------

@torch.no_grad()
def test_recording_does_not_change_logits(tiny_model: GPT) -> None:
    ids = tokens(9, seed=5)[None]
    plain = tiny_model(ids)
    # same arithmetic as the plain forward: bit for bit
    assert torch.equal(tiny_model(ids, rec=Recorder(["blocks.*.resid_post", "embed"])), plain)
    # the pattern takes an explicit softmax instead of the fused kernel: equal up to rounding
    torch.testing.assert_close(tiny_model(ids, rec=Recorder(["*"])), plain, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_records_only_what_was_asked(tiny_model: GPT) -> None:
    ids = tokens(5, seed=6)[None]
    rec = Recorder(["blocks.1.resid_post", "logits"])
    tiny_model(ids, rec=rec)
    assert set(rec.acts) == {"blocks.1.resid_post", "logits"}

    rec = Recorder(["blocks.*.attn.pattern", "blocks.[0].mlp.*"])
    tiny_model(ids, rec=rec)
    assert set(rec.acts) == {"blocks.0.attn.pattern", "blocks.1.attn.pattern", "blocks.0.mlp.post"}

    rec = Recorder([])
    tiny_model(ids, rec=rec)
    assert rec.acts == {}


@torch.no_grad()
def test_records_every_name_with_its_shape(tiny_model: GPT) -> None:
    c = tiny_model.config
    B, T, C, H, V = 2, 6, c.n_embd, c.n_head, c.vocab_size
    rec = Recorder(all_names(c.n_layer))
    tiny_model(torch.stack([tokens(T, seed=7), tokens(T, seed=8)]), rec=rec)
    assert list(rec.acts) == all_names(c.n_layer)  # recorded in forward order
    for name, act in rec.acts.items():
        part = name.split(".", 2)[-1]
        want = {"attn.pattern": (B, H, T, T), "attn.z": (B, T, H, C // H), "mlp.post": (B, T, 4 * C), "logits": (B, T, V)}.get(part, (B, T, C))
        assert act.shape == want, name
    # the pieces add up: the stream is the sum of what each part wrote into it
    torch.testing.assert_close(rec["blocks.0.resid_pre"], rec["embed"] + rec["pos_embed"])
    for i in range(c.n_layer):
        b = f"blocks.{i}."
        torch.testing.assert_close(rec[b + "resid_mid"], rec[b + "resid_pre"] + rec[b + "attn_out"])
        torch.testing.assert_close(rec[b + "resid_post"], rec[b + "resid_mid"] + rec[b + "mlp_out"])
        pattern = rec[b + "attn.pattern"]
        torch.testing.assert_close(pattern.sum(-1), torch.ones(B, H, T))
        assert torch.all(pattern.triu(1) == 0)  # causal: nothing from the future


@pytest.mark.parametrize("packed", [False, True], ids=["gemm copies", "oneDNN packed copies"])
def test_inference_copies_of_the_weights_follow_the_weights(packed: bool, monkeypatch) -> None:
    """Inference reads the projections and the lm head from copies laid out for speed: after a
    training step or a load, it must compute with the new weights, exactly as training does.
    (Large layers use oneDNN's packed copy for several rows; here every layer does, if asked.)"""
    if packed:
        monkeypatch.setattr(FastLinear, "PACKED_MIN", 0)
    torch.manual_seed(0)
    model = speed_up(GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, n_ctx=32)).eval())
    ids = torch.randint(0, 50257, (2, 9))
    with torch.no_grad():
        model(ids)  # makes the copies
    other = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, n_ctx=32)).eval()
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        after = model(ids)
    torch.testing.assert_close(after, other(ids).detach(), **TOL)  # other computes with grad: the plain path
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(ids).logsumexp(-1).mean().backward()
    opt.step()
    with torch.no_grad():
        stepped = model(ids)
    torch.testing.assert_close(stepped, model(ids).detach(), **TOL)
    assert not torch.allclose(stepped, after, atol=1e-3)


@pytest.mark.parametrize("packed", [False, True], ids=["gemm copies", "oneDNN packed copies"])
def test_evaluation_under_bf16_autocast_uses_the_plain_weights(packed: bool, monkeypatch) -> None:
    """Training evaluates without gradients under autocast: it must compute what training computes
    (autocast's bf16 products), not the fp32 inference copies, which autocast does not see."""
    if packed:
        monkeypatch.setattr(FastLinear, "PACKED_MIN", 0)
    torch.manual_seed(0)
    model = speed_up(GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, n_ctx=32)).eval())
    ids = torch.randint(0, 50257, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = model(ids).float().detach()  # with gradients: nn.Linear's own path
        with torch.no_grad():
            logits = model(ids).float()
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("packed", [False, True], ids=["gemm copies", "oneDNN packed copies"])
@torch.no_grad()
def test_speed_up_changes_no_output(tiny_model: GPT, packed: bool, monkeypatch) -> None:
    """The speed layer swaps how products are computed, not what: logits, recorded activations and
    cached decoding equal the plain model's, for one row and for several."""
    if packed:
        monkeypatch.setattr(FastLinear, "PACKED_MIN", 0)
    fast = speed_up(copy.deepcopy(tiny_model))
    assert isinstance(fast.h[0].attn.c_attn, FastLinear) and fast.head_product is not F.linear
    assert fast.state_dict().keys() == tiny_model.state_dict().keys()
    for rows in (1, 3):
        ids = torch.stack([tokens(11, seed=20 + r) for r in range(rows)])
        torch.testing.assert_close(fast(ids), tiny_model(ids), atol=1e-5, rtol=1e-5)
        rec_fast, rec_plain = Recorder(["*"]), Recorder(["*"])
        fast(ids, rec=rec_fast)
        tiny_model(ids, rec=rec_plain)
        for name in rec_plain.acts:
            torch.testing.assert_close(rec_fast[name], rec_plain[name], atol=1e-5, rtol=1e-5)
        cache = fast.new_cache(rows)
        fast(ids[:, :6], cache=cache)
        torch.testing.assert_close(fast(ids[:, 6:7], cache=cache)[:, 0], tiny_model(ids)[:, 6], atol=1e-5, rtol=1e-5)
