"""Our Llama-family model against the reference: transformers' LlamaForCausalLM,
Qwen2ForCausalLM and MistralForCausalLM.

Random checkpoints of each (tests/llama_fixtures.py: grouped-query attention, tied and
untied heads, Llama 3's rotary scaling, Qwen's biases, Mistral's head_dim and sliding
window) are saved by transformers in fp32 and bf16, read back with our loader, and both
models run on the same tokens: logits, every hidden state and every attention pattern
must agree. The KV cache, batched decoding, the speed layer and the Recorder are checked
against our own full, plain forward; broken checkpoints against their one sentence.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from helpers import expect_error
from llama_fixtures import VARIANTS, save_reference
from model.batching import BatchDecoder
from model.generate import generate
from model.hf_tokenizer import HFTokenizer
from model.llama import Llama, Llama3Rope, LlamaConfig
from model.loading import load_model
from model.record import Recorder, all_names
from model.sampling import SamplingParams
from model.speed import FastLinear, speed_up
from test_loading import edit_config

TOL = dict(atol=1e-4, rtol=1e-4)
STEP_TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """(variant, dtype name) -> (transformers' model read from the files in fp32, the directory)."""
    root = tmp_path_factory.mktemp("llama-family")
    made = {}
    for variant in VARIANTS:
        for dtype in (torch.float32, torch.bfloat16):
            name = str(dtype).removeprefix("torch.")
            directory = root / f"{variant}-{name}"
            made[variant, name] = save_reference(variant, directory, dtype), directory
    yield made
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def gqa(checkpoints: dict) -> Llama:
    """Our loaded Llama with 4 query heads over 2 KV heads (speed layer applied, as served)."""
    return load_model(checkpoints["llama", "float32"][1]).model


def tokens(n: int, seed: int, vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


# --- equivalence with transformers -------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_transformers(checkpoints: dict, variant: str, dtype: str) -> None:
    hf, directory = checkpoints[variant, dtype]
    loaded = load_model(directory, dtype=torch.float32)  # a bf16 checkpoint is upcast when asked
    ours, c = loaded.model, hf.config
    assert isinstance(ours, Llama) and loaded.dtype == torch.float32 and not ours.training
    assert isinstance(loaded.tokenizer, HFTokenizer)
    assert ours.head_weight().dtype == torch.float32
    cfg = loaded.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.n_embd, cfg.vocab_size, cfg.n_inner) == (
        c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.hidden_size, c.vocab_size,
        c.intermediate_size)
    assert cfg.tie_word_embeddings == c.tie_word_embeddings and (ours.lm_head is None) == c.tie_word_embeddings
    assert ours.num_parameters()["total"] == sum(p.numel() for p in hf.parameters())

    L, H = cfg.n_layer, cfg.n_head
    ids = torch.stack([tokens(cfg.n_ctx, seed=s, vocab=cfg.vocab_size) for s in (1, 2)])  # the whole context
    rec = Recorder(["blocks.*.resid_pre", "blocks.*.attn.pattern", "ln_final"])
    with torch.no_grad():
        want = hf(ids, output_hidden_states=True, output_attentions=True)
        plain = ours(ids)  # scaled_dot_product_attention with grouped heads
        recorded = ours(ids, rec=rec)  # explicit softmax, to record the pattern
    assert len(want.hidden_states) == L + 1 and len(want.attentions) == L
    torch.testing.assert_close(plain, want.logits, **TOL)
    torch.testing.assert_close(recorded, want.logits, **TOL)
    # transformers' hidden_states: the input of each block, then the final norm of the last block's output
    for i in range(L):
        torch.testing.assert_close(rec[f"blocks.{i}.resid_pre"], want.hidden_states[i], **TOL)
        assert rec[f"blocks.{i}.attn.pattern"].shape == (2, H, cfg.n_ctx, cfg.n_ctx)  # one per query head
        torch.testing.assert_close(rec[f"blocks.{i}.attn.pattern"], want.attentions[i], **TOL)
    torch.testing.assert_close(rec["ln_final"], want.hidden_states[L], **TOL)


def test_configs_read_as_written(checkpoints: dict) -> None:
    """What each config.json says reaches the model: rotary scaling, biases, head size, the window."""
    configs = {v: load_model(checkpoints[v, "float32"][1]).config for v in VARIANTS}
    assert configs["llama"].rope_scaling == Llama3Rope(8.0, 1.0, 4.0, 16) and configs["llama"].rope_theta == 500000
    assert (configs["llama-untied"].qkv_bias, configs["llama-untied"].o_bias, configs["llama-untied"].mlp_bias) == (
        True, True, True)
    assert (configs["qwen2"].qkv_bias, configs["qwen2"].o_bias, configs["qwen2"].rope_theta) == (True, False, 1e6)
    mistral = configs["mistral"]
    assert (mistral.head_dim, mistral.n_head * mistral.head_dim, mistral.n_embd) == (16, 128, 64)
    assert mistral.n_ctx == 48  # max_position_embeddings 64, capped at the sliding window


def test_hub_spelling_of_the_rotary_settings(checkpoints: dict, tmp_path: Path) -> None:
    """The hub's config files put rope_theta and rope_scaling at the top (transformers 5 writes one
    rope_parameters object): both spellings give the same model."""
    hf, directory = checkpoints["llama", "float32"]
    copy_dir = Path(shutil.copytree(directory, tmp_path / "hub-style"))
    cfg = json.loads((copy_dir / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope
    (copy_dir / "config.json").write_text(json.dumps(cfg))
    loaded = load_model(copy_dir)
    assert loaded.config == load_model(directory).config
    ids = tokens(20, seed=3, vocab=loaded.config.vocab_size)[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), hf(ids).logits, **TOL)


def test_bf16_weights_as_they_are(checkpoints: dict) -> None:
    """A bf16 checkpoint stays bf16 (it decodes faster than fp32 here; bench/README.md): close to the
    fp32 reference on the same weights, and its cached decode follows its own full forward."""
    assert load_model(checkpoints["qwen2", "float32"][1]).dtype == torch.float32
    hf, directory = checkpoints["qwen2", "bfloat16"]
    loaded = load_model(directory)
    model = loaded.model
    assert loaded.dtype == torch.bfloat16 and model.head_weight().dtype == torch.bfloat16
    ids = tokens(24, seed=4, vocab=loaded.config.vocab_size)[None]
    with torch.no_grad():
        got, want = model(ids).float(), hf(ids).logits
        assert (got - want).abs().max() < 0.05 * want.abs().max()
        assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.9
        cache = loaded.model.new_cache(1, dtype=torch.bfloat16)
        model(ids[:, :20], cache=cache)
        steps = torch.cat([model(ids[:, t:t + 1], cache=cache) for t in range(20, 24)], dim=1).float()
    torch.testing.assert_close(steps, got[:, 20:], atol=0.05 * float(want.abs().max()), rtol=0)


# --- KV cache and batched decoding against full forwards ---------------------------------------

@torch.no_grad()
def test_cache_holds_kv_heads_only(gqa: Llama) -> None:
    cache = gqa.new_cache(3, max_len=10)
    assert cache.k.shape == (gqa.config.n_layer, 3, 2, 10, 16)  # 2 KV heads, not the 4 query heads


@torch.no_grad()
def test_cache_steps_match_full_forward(gqa: Llama) -> None:
    V = gqa.config.vocab_size
    ids = tokens(14, seed=5, vocab=V)[None]
    rec_full = Recorder(["blocks.*.attn.pattern"])
    full = gqa(ids, rec=rec_full)
    cache = gqa.new_cache(1)
    prefill = 5
    torch.testing.assert_close(gqa(ids[:, :prefill], cache=cache), full[:, :prefill], **STEP_TOL)
    for t in range(prefill, ids.shape[1]):
        rec = Recorder(["blocks.*.attn.pattern"])
        step = gqa(ids[:, t:t + 1], cache=cache, rec=rec, last_only=True)
        torch.testing.assert_close(step, full[:, t:t + 1], **STEP_TOL)
        for i in range(gqa.config.n_layer):  # the new query's row of the full pattern, every query head
            want = rec_full[f"blocks.{i}.attn.pattern"][:, :, t:t + 1, :t + 1]
            torch.testing.assert_close(rec[f"blocks.{i}.attn.pattern"], want, atol=1e-6, rtol=1e-5)
    assert cache.lengths.tolist() == [ids.shape[1]]


@torch.no_grad()
def test_cache_rows_of_different_lengths(gqa: Llama) -> None:
    V = gqa.config.vocab_size
    seqs = [tokens(11, seed=6, vocab=V), tokens(8, seed=7, vocab=V)]
    starts = [6, 3]
    fulls = [gqa(s[None])[0] for s in seqs]
    cache = gqa.new_cache(2)
    # right-pad the shorter prompt, then rewind its length: its padding keys are masked, then overwritten
    prompt = torch.stack([seqs[0][:6], torch.cat([seqs[1][:3], torch.zeros(3, dtype=torch.long)])])
    logits = gqa(prompt, cache=cache)
    cache.lengths[1] = starts[1]
    for r in range(2):
        torch.testing.assert_close(logits[r, :starts[r]], fulls[r][:starts[r]], **STEP_TOL)
    for k in range(4):  # both rows step together, each at its own position (and its own rotation)
        pos = [s + k for s in starts]
        step = gqa(torch.tensor([[seqs[r][pos[r]]] for r in range(2)]), cache=cache)
        for r in range(2):
            torch.testing.assert_close(step[r, 0], fulls[r][pos[r]], **STEP_TOL)
    assert cache.lengths.tolist() == [10, 7]


@torch.no_grad()
def test_greedy_generation_follows_full_forwards(gqa: Llama) -> None:
    """Each greedy token of the cached decode is the argmax of a full forward over everything before it."""
    V = gqa.config.vocab_size
    prompt = tokens(6, seed=8, vocab=V).tolist()
    steps = list(generate(gqa, prompt, SamplingParams(temperature=0), max_new_tokens=10, seed=0))
    ids = list(prompt)
    for step in steps:
        logits = gqa(torch.tensor([ids]))[0, -1]
        assert step.id == int(logits.argmax())
        assert step.raw_prob == pytest.approx(float(logits.softmax(-1).max()), rel=1e-4)
        ids.append(step.id)


def test_batched_decode_matches_single_streams(gqa: Llama) -> None:
    """Streams of different prompt lengths decoded together give each stream's own tokens."""
    V = gqa.config.vocab_size
    requests = [(tokens(n, seed=10 + n, vocab=V).tolist(), SamplingParams(temperature=t), seed)
                for n, t, seed in [(3, 0.0, 0), (9, 0.8, 1), (5, 1.2, 2), (12, 0.0, 3)]]
    decoder = BatchDecoder(gqa, max_batch=3)
    got: dict[int, list[int]] = {}
    for prompt, params, seed in requests:
        got[decoder.add(prompt, params, 12, seed=seed)] = []
    while decoder.active:
        for seq_id, step, _, _ in decoder.step():
            got[seq_id].append(step.id)
    for (prompt, params, seed), ids in zip(requests, got.values()):
        assert ids == [s.id for s in generate(gqa, prompt, params, 12, seed=seed)]


# --- the speed layer and recording -------------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True], ids=["gemm copies", "oneDNN packed copies"])
@torch.no_grad()
def test_speed_up_changes_no_output(checkpoints: dict, packed: bool, monkeypatch) -> None:
    """Unbiased projections and an untied head through the fast products: same logits, activations
    and cached decoding as the plain model, for one row and several."""
    if packed:
        monkeypatch.setattr(FastLinear, "PACKED_MIN", 0)
    plain = load_model(checkpoints["mistral", "float32"][1]).model
    for module in plain.modules():  # back to plain nn.Linear and F.linear
        if type(module) is FastLinear:
            module.__class__ = torch.nn.Linear
    plain.head_product = F.linear
    fast = speed_up(copy.deepcopy(plain))
    assert isinstance(fast.layers[0].self_attn.q_proj, FastLinear) and fast.layers[0].self_attn.q_proj.bias is None
    V = plain.config.vocab_size
    for rows in (1, 3):
        ids = torch.stack([tokens(11, seed=20 + r, vocab=V) for r in range(rows)])
        torch.testing.assert_close(fast(ids), plain(ids), **STEP_TOL)
        rec_fast, rec_plain = Recorder(["*"]), Recorder(["*"])
        fast(ids, rec=rec_fast)
        plain(ids, rec=rec_plain)
        for name in rec_plain.acts:
            torch.testing.assert_close(rec_fast[name], rec_plain[name], **STEP_TOL)
        cache = fast.new_cache(rows)
        fast(ids[:, :6], cache=cache)
        torch.testing.assert_close(fast(ids[:, 6:7], cache=cache)[:, 0], plain(ids)[:, 6], **STEP_TOL)


@torch.no_grad()
def test_records_every_name_with_its_shape(gqa: Llama) -> None:
    c = gqa.config
    B, T, C, H, V = 2, 7, c.n_embd, c.n_head, c.vocab_size
    names = all_names(c.n_layer, pos_embed=False)
    rec = Recorder(names + ["pos_embed"])
    ids = torch.stack([tokens(T, seed=30, vocab=V), tokens(T, seed=31, vocab=V)])
    plain = gqa(ids)
    torch.testing.assert_close(gqa(ids, rec=rec), plain, **STEP_TOL)
    assert list(rec.acts) == names  # in forward order; no position embedding under rotary positions
    for name, act in rec.acts.items():
        part = name.split(".", 2)[-1]
        want = {"attn.pattern": (B, H, T, T), "attn.z": (B, T, H, c.head_dim), "mlp.post": (B, T, c.n_inner), "logits": (B, T, V)}.get(part, (B, T, C))
        assert act.shape == want, name
    torch.testing.assert_close(rec["blocks.0.resid_pre"], rec["embed"])
    for i in range(c.n_layer):
        b = f"blocks.{i}."
        torch.testing.assert_close(rec[b + "resid_mid"], rec[b + "resid_pre"] + rec[b + "attn_out"])
        torch.testing.assert_close(rec[b + "resid_post"], rec[b + "resid_mid"] + rec[b + "mlp_out"])
        pattern = rec[b + "attn.pattern"]
        torch.testing.assert_close(pattern.sum(-1), torch.ones(B, H, T))
        assert torch.all(pattern.triu(1) == 0)  # causal: nothing from the future
        # query heads that share a KV head see the same keys, yet ask different questions
        assert not torch.allclose(pattern[:, 0], pattern[:, 1])
    # the logit lens' last state: the final norm of the last block's output, through the head
    torch.testing.assert_close(gqa.unembed(gqa.ln_f(rec[f"blocks.{c.n_layer - 1}.resid_post"])), plain, **STEP_TOL)


def test_what_the_engine_reads_off_any_model(gqa: Llama) -> None:
    """GPT-2's names for the token embedding and the final norm, the parameter breakdown, the
    context check."""
    assert gqa.wte is gqa.embed_tokens and gqa.ln_f is gqa.norm
    parts = gqa.num_parameters()
    c = gqa.config
    assert parts["position_embedding"] == 0 and "lm_head" not in parts  # rotary positions; tied head
    assert parts["token_embedding"] == c.vocab_size * c.n_embd
    assert parts["attention"] == c.n_layer * (c.n_embd * c.head_dim * (2 * c.n_head + 2 * c.n_kv_head))
    assert parts["mlp"] == c.n_layer * 3 * c.n_embd * c.n_inner
    assert parts["layer_norm"] == (2 * c.n_layer + 1) * c.n_embd
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    with pytest.raises(ValueError, match="sequence of 65 tokens is longer than the context of 64"):
        gqa(torch.zeros(1, 65, dtype=torch.long))


def test_untied_head_is_its_own_part(checkpoints: dict) -> None:
    model = load_model(checkpoints["llama-untied", "float32"][1]).model
    parts = model.num_parameters()
    assert parts["lm_head"] == model.config.vocab_size * model.config.n_embd
    assert not torch.equal(model.head_weight(), model.embed_tokens.weight)


def test_random_init_runs() -> None:
    """A model built from a config alone (the benchmark's random weights) runs and is causal."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, n_ctx=16, vocab_size=50, n_inner=48,
                              head_dim=8)).eval()
    ids = torch.randint(0, 50, (1, 10))
    with torch.no_grad():
        full, prefix = model(ids), model(ids[:, :6])
    torch.testing.assert_close(full[:, :6], prefix, **STEP_TOL)


# --- broken checkpoints: one sentence each -----------------------------------------------------

@pytest.fixture
def model_dir(checkpoints: dict, tmp_path: Path) -> Path:
    """A private copy of the untied Llama checkpoint, free to break."""
    return Path(shutil.copytree(checkpoints["llama-untied", "float32"][1], tmp_path / "model"))


def edit_tensors(directory: Path, **changes: torch.Tensor | None) -> None:
    """Replace tensors in model.safetensors by their name in the file; None removes one."""
    path = directory / "model.safetensors"
    tensors = load_file(path)
    for name, t in changes.items():
        tensors.pop(name, None)
        if t is not None:
            tensors[name] = t
    save_file(tensors, path)


def test_missing_tensor(model_dir: Path) -> None:
    edit_tensors(model_dir, **{"model.layers.1.mlp.up_proj.weight": None})
    expect_error(model_dir, r"model\.safetensors: missing tensor model\.layers\.1\.mlp\.up_proj\.weight$")


def test_missing_untied_head(model_dir: Path) -> None:
    edit_tensors(model_dir, **{"lm_head.weight": None})
    expect_error(model_dir, r"model\.safetensors: missing tensor lm_head\.weight$")


def test_unexpected_tensor(model_dir: Path) -> None:
    edit_config(model_dir, num_hidden_layers=1)
    expect_error(model_dir, r"model\.safetensors: unexpected tensor model\.layers\.1\.\S+ \(and \d+ more\)$")


def test_wrong_shape(model_dir: Path) -> None:
    edit_tensors(model_dir, **{"model.layers.0.self_attn.k_proj.weight": torch.zeros(32, 64)})
    expect_error(model_dir, re.escape("model.safetensors: tensor model.layers.0.self_attn.k_proj.weight has "
                                      "shape (32, 64), expected (64, 64) (from config.json)"))


def test_wrong_kv_heads_in_config(model_dir: Path) -> None:
    edit_config(model_dir, num_key_value_heads=2)
    expect_error(model_dir, re.escape("tensor model.layers.0.self_attn.k_proj.weight has shape (64, 64), "
                                      "expected (32, 64)"))
    edit_config(model_dir, num_key_value_heads=3)
    expect_error(model_dir, r"config\.json: num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)")


def test_tied_head_that_differs(model_dir: Path) -> None:
    edit_config(model_dir, tie_word_embeddings=True)
    expect_error(model_dir, r"lm_head\.weight differs from model\.embed_tokens\.weight, but config\.json says "
                            r"tie_word_embeddings")


def test_tied_head_stored_anyway_is_accepted(checkpoints: dict, tmp_path: Path) -> None:
    directory = Path(shutil.copytree(checkpoints["llama", "float32"][1], tmp_path / "model"))
    tensors = load_file(directory / "model.safetensors")
    edit_tensors(directory, **{"lm_head.weight": tensors["model.embed_tokens.weight"].clone()})
    assert load_model(directory).model.lm_head is None


@pytest.mark.parametrize("changes, pattern", [
    ({"model_type": "bert"}, (r"config\.json: model_type 'bert' is not supported \(expected one of 'gpt2', "
                              r"'llama', 'mistral', 'qwen2'\)$")),
    ({"model_type": None}, r"config\.json: model_type None is not supported"),
    ({"hidden_size": None}, r"config\.json: hidden_size is missing \(a llama config\.json gives num_hidden_layers, "),
    ({"hidden_act": "gelu"}, r"config\.json: hidden_act 'gelu' is not supported \(expected 'silu'\)$"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
     r"config\.json: rotary scaling of type 'yarn' is not supported \(expected 'default' or 'llama3'\)$"),
    ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4}},
     r"config\.json: rotary scaling 'llama3' needs low_freq_factor$"),
    ({"num_hidden_layers": "many"}, r"config\.json: invalid literal for int\(\)"),
    ({"intermediate_size": 0}, r"config\.json: every size in the model's shape must be at least 1$"),
])
def test_unsupported_config(model_dir: Path, changes: dict, pattern: str) -> None:
    edit_config(model_dir, **changes)
    expect_error(model_dir, pattern)


def test_missing_tokenizer(model_dir: Path) -> None:
    (model_dir / "tokenizer.json").unlink()
    expect_error(model_dir, r"tokenizer\.json: not found — a Llama-family checkpoint brings its own tokenizer as "
                            r"tokenizer\.json; copy it from the model's hub repository into this directory$")


def test_broken_tokenizer(model_dir: Path) -> None:
    (model_dir / "tokenizer.json").write_text('{"model": {"type": "WordLevel", "vocab": {}, "unk_token": "x"}}')
    expect_error(model_dir, r"tokenizer\.json: the tokenizer's model is 'WordLevel'; only byte-pair encoding \(BPE\) "
                            r"is shown$")
    (model_dir / "tokenizer.json").write_text("{")
    expect_error(model_dir, r"tokenizer\.json: not a tokenizer Hugging Face tokenizers can read")


def test_sharded_checkpoint(checkpoints: dict, model_dir: Path) -> None:
    """Weights in several files, listed in model.safetensors.index.json, as larger checkpoints come."""
    tensors = load_file(model_dir / "model.safetensors")
    (model_dir / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, model_dir / file)
    index = {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    hf = checkpoints["llama-untied", "float32"][0]
    ids = tokens(10, seed=40, vocab=hf.config.vocab_size)[None]
    with torch.no_grad():
        torch.testing.assert_close(load_model(model_dir).model(ids), hf(ids).logits, **TOL)

    (model_dir / "model-00002-of-00002.safetensors").unlink()
    expect_error(model_dir, r"model-00002-of-00002\.safetensors: not found — "
                            r"model\.safetensors\.index\.json lists it$")
    index["weight_map"][names[0]] = "../elsewhere.safetensors"
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    expect_error(model_dir, r"index\.json: weight_map must map each tensor to a file beside the index$")
