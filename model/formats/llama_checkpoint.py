"""Llama-family checkpoints (Llama 3.x, SmolLM2, Qwen2/2.5, Mistral) in the Hugging Face layout <-> model/nets/llama.py.

A checkpoint holds config.json, tokenizer.json and the weights (model.safetensors, or shards
listed in model.safetensors.index.json). Its names are ours with a "model." prefix; nothing is
transposed. Its tokenizer is its own tokenizer.json.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from model.formats import gguf_checkpoint
from model.formats.gguf_file import GGUFFile
from model.tokenizers.hf_tokenizer import HFTokenizer
from model.nets.llama import Llama3Rope, LlamaConfig, rope_frequencies
from model.formats.weights import CheckpointError, check_tensors, read_tensors

# the keys that give a Llama-family model its shape: config.json must have them
LLAMA_SHAPE = ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size", "vocab_size",
               "max_position_embeddings")
LLAMA3_ROPE = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def read_config(path: Path, cfg: dict) -> LlamaConfig:
    """A Llama, Qwen2 or Mistral config.json -> LlamaConfig, refusing anything model/nets/llama.py does not compute.

    Reads both spellings of the rotary settings: rope_theta and rope_scaling at the top
    (the hub's files), or one rope_parameters object (what transformers 5 writes).
    """
    model_type = cfg["model_type"]
    missing = [k for k in LLAMA_SHAPE if cfg.get(k) is None]
    if missing:
        raise CheckpointError(f"{path}: {missing[0]} is missing (a {model_type} config.json gives "
                              f"{', '.join(LLAMA_SHAPE)})")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(f"{path}: hidden_act {act!r} is not supported (expected 'silu')")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise CheckpointError(f"{path}: rope_scaling must be an object or null")
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "llama3"):
        raise CheckpointError(f"{path}: rotary scaling of type {kind!r} is not supported "
                              "(expected 'default' or 'llama3')")
    if rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0)) != 1.0:
        raise CheckpointError(f"{path}: partial_rotary_factor is not supported (expected 1.0)")
    if kind == "llama3" and (absent := [k for k in LLAMA3_ROPE if rope.get(k) is None]):
        raise CheckpointError(f"{path}: rotary scaling 'llama3' needs {absent[0]}")
    heads, width = cfg["num_attention_heads"], cfg["hidden_size"]
    n_ctx = cfg["max_position_embeddings"]
    # a sliding window limits how far back a query looks; within the window attention is
    # ordinary causal attention, so the context is capped at the window
    window = cfg.get("sliding_window") if model_type == "mistral" or cfg.get("use_sliding_window") else None
    try:
        if window is not None:
            n_ctx = min(int(n_ctx), int(window))
        head_dim = cfg.get("head_dim") or int(width) // int(heads)
        bias = bool(cfg.get("attention_bias", False))
        config = LlamaConfig(
            n_layer=int(cfg["num_hidden_layers"]), n_head=int(heads),
            n_kv_head=int(cfg.get("num_key_value_heads") or heads), n_embd=int(width), n_ctx=int(n_ctx),
            vocab_size=int(cfg["vocab_size"]), n_inner=int(cfg["intermediate_size"]), head_dim=int(head_dim),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
            rope_scaling=Llama3Rope(*(float(rope[k]) for k in LLAMA3_ROPE[:3]),
                                    int(rope[LLAMA3_ROPE[3]])) if kind == "llama3" else None,
            qkv_bias=model_type == "qwen2" or bias, o_bias=bias, mlp_bias=bool(cfg.get("mlp_bias", False)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), model_type=model_type)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    if min(config.n_layer, config.n_head, config.n_kv_head, config.n_embd, config.n_ctx, config.vocab_size,
           config.n_inner, config.head_dim) < 1:
        raise CheckpointError(f"{path}: every size in the model's shape must be at least 1")
    return config


def read_state(directory: Path, expected: dict[str, torch.Tensor],
                       dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The weights file(s) -> a state dict for our Llama: the file's names less "model.", nothing transposed.

    dtype None: bf16 weights stay bf16 (faster to decode here than fp32), any others become fp32.
    """
    path, loaded = read_tensors(directory)
    if dtype is None:
        dtype = torch.bfloat16 if {t.dtype for t in loaded.values()} == {torch.bfloat16} else torch.float32
    # older files also hold each layer's rotary frequencies, which we compute from config.json
    tensors = {k.removeprefix("model."): t for k, t in loaded.items() if not k.endswith(".rotary_emb.inv_freq")}
    del loaded
    return llama_state(path, tensors, expected, dtype,
                       stored=lambda n: n if n.startswith("lm_head.") else f"model.{n}")


def llama_state(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], dtype: torch.dtype,
                stored: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors by name (without "model.") -> our Llama's state dict, checked."""
    tied = "lm_head.weight" not in expected
    lm_head = tensors.pop("lm_head.weight", None) if tied else None
    check_tensors(path, tensors, expected, stored=stored)
    if lm_head is not None and not torch.equal(lm_head, tensors["embed_tokens.weight"]):
        raise CheckpointError(f"{path}: lm_head.weight differs from model.embed_tokens.weight, but config.json "
                              "says tie_word_embeddings (set it to false to use the file's own lm_head)")
    return {name: tensors.pop(name).to(dtype).contiguous() for name in expected}


def read_tokenizer(directory: Path, name: str) -> HFTokenizer:
    """tokenizer.json beside the weights, through Hugging Face tokenizers."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found — a Llama-family checkpoint brings its own tokenizer as "
                              "tokenizer.json; copy it from the model's hub repository into this directory")
    try:
        return HFTokenizer.from_checkpoint(directory, name)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def gguf_state(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], dtype: torch.dtype,
               stored: dict[str, str]) -> dict[str, torch.Tensor]:
    """A GGUF file's tensors, already under Hugging Face names (model/formats/gguf_checkpoint.py) -> our Llama's state
    dict; `stored` gives each name as the file spells it, for messages."""
    tensors = {k.removeprefix("model."): t for k, t in tensors.items()}
    return llama_state(path, tensors, expected, dtype, stored=lambda n: stored.get(n, stored.get(f"model.{n}", n)))


def check_gguf(gguf: GGUFFile, config: LlamaConfig) -> None:
    """A GGUF file stores Llama 3.1's stretched rotary frequencies as divisors: they must be the ones the
    config makes."""
    plain = rope_frequencies(LlamaConfig(**{**config.to_dict(), "rope_scaling": None}))
    gguf_checkpoint.check_rope_freqs(gguf, plain / rope_frequencies(config))
