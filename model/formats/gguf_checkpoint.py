"""A GGUF file as a checkpoint: its metadata as the config.json a Hugging Face checkpoint of the same
model would have, and its tensors under that checkpoint's names and in its layout, so that
model/loading.py checks and loads them exactly as it does a checkpoint directory.

What llama.cpp's converter changed, and is undone here:
- names: "blk.3.attn_q.weight" is "model.layers.3.self_attn.q_proj.weight";
- Llama's q and k rows are reordered: llama.cpp turns the pairs (i, i + 1) of each head by one
  rotary angle, the Hugging Face layout the pairs (i, i + D/2), so the converter moved each row
  to where llama.cpp's rotation looks for it. Qwen2 files keep the Hugging Face order;
- GPT-2's four Conv1D matrices were transposed to (out, in); the checkpoint keeps them (in, out);
- Llama 3.1's stretched rotary frequencies are stored as a tensor of divisors (rope_freqs)
  rather than as the settings that make them.
"""

from __future__ import annotations

import math
import re

import torch

from model.formats.gguf_file import STORAGE, GGUFError, GGUFFile

ARCHITECTURES = ("llama", "qwen2", "gpt2")
LLAMA_LAYER = {  # GGUF's name inside blk.N -> the Hugging Face name inside model.layers.N
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
LLAMA_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
GPT2_LAYER = {"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
              "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}
GPT2_TOP = {"token_embd": "wte", "position_embd": "wpe", "output_norm": "ln_f", "output": "lm_head"}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
LAYER_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
TOP_NAME = re.compile(r"(\w+)\.(weight|bias)")
ROPE_FREQS = "rope_freqs.weight"
# Llama 3.1 and 3.2 stretch their rotary frequencies with these settings, and only the factor differs
LLAMA3_STRETCH = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def architecture(gguf: GGUFFile) -> str:
    arch = gguf.metadata.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"its architecture is {arch!r}, which this engine does not compute "
                        f"(it computes {', '.join(ARCHITECTURES)})")
    return arch


def hf_config(gguf: GGUFFile) -> dict:
    """The config.json of the same model in the Hugging Face layout."""
    arch, m = architecture(gguf), gguf.metadata
    key = lambda k: m.get(f"{arch}.{k}")  # noqa: E731
    vocab = key("vocab_size") or len(m.get("tokenizer.ggml.tokens") or []) or None
    if "token_embd.weight" in gguf.tensors:  # the embedding's rows are the model's vocabulary
        vocab = gguf.tensors["token_embd.weight"].shape[0]
    if arch == "gpt2":
        return {"model_type": "gpt2", "n_layer": key("block_count"), "n_head": key("attention.head_count"),
                "n_embd": key("embedding_length"), "n_positions": key("context_length"), "vocab_size": vocab,
                "n_inner": key("feed_forward_length"),
                "layer_norm_epsilon": key("attention.layer_norm_epsilon") or 1e-5}
    config = {"model_type": arch, "num_hidden_layers": key("block_count"),
              "num_attention_heads": key("attention.head_count"),
              "num_key_value_heads": key("attention.head_count_kv"), "hidden_size": key("embedding_length"),
              "intermediate_size": key("feed_forward_length"), "vocab_size": vocab,
              "max_position_embeddings": key("context_length"),
              "head_dim": key("attention.key_length") or key("rope.dimension_count"),
              "rms_norm_eps": key("attention.layer_norm_rms_epsilon") or 1e-6,
              "rope_theta": key("rope.freq_base") or 10000.0,
              "attention_bias": "blk.0.attn_output.bias" in gguf.tensors,
              "tie_word_embeddings": "output.weight" not in gguf.tensors}
    scaling = key("rope.scaling.type")
    if scaling not in (None, "none"):
        config["rope_scaling"] = {"rope_type": scaling}
    if ROPE_FREQS in gguf.tensors:
        config["rope_scaling"] = {"rope_type": "llama3", "factor": float(gguf.read(ROPE_FREQS).max()),
                                  **LLAMA3_STRETCH}
    return config


def hf_tensors(gguf: GGUFFile, config: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor de-quantized to float32, under its Hugging Face name and in that layout; and
    the GGUF name of each, for messages."""
    arch = architecture(gguf)
    layer_names, top_names = (GPT2_LAYER, GPT2_TOP) if arch == "gpt2" else (LLAMA_LAYER, LLAMA_TOP)
    tensors: dict[str, torch.Tensor] = {}
    stored: dict[str, str] = {}
    for name in gguf.tensors:
        if name == ROPE_FREQS:
            continue  # read into the config
        if m := LAYER_NAME.fullmatch(name):
            base = layer_names.get(m[2])
            prefix = f"h.{m[1]}" if arch == "gpt2" else f"model.layers.{m[1]}"
            hf = f"{prefix}.{base}.{m[3]}" if base else None
        elif m := TOP_NAME.fullmatch(name):
            base = top_names.get(m[1])
            hf = f"{base}.{m[2]}" if base else None
        else:
            hf = None
        if hf is None:
            raise GGUFError(f"tensor {name} has no place in a {arch} model")
        t = gguf.read(name)
        if arch == "llama" and (".q_proj." in hf or ".k_proj." in hf):
            heads = config["num_attention_heads"] if ".q_proj." in hf else config["num_key_value_heads"]
            t = unpermute(t, heads or 1)
        if arch == "gpt2" and hf.endswith(CONV1D):
            t = t.t()
        tensors[hf], stored[hf] = t, name
    if arch == "gpt2" and "lm_head.weight" in tensors:
        # GPT-2 ties its output layer to the token embedding; llama.cpp writes it a second time, possibly
        # stored in another type. The model uses the embedding for both, as the original does.
        del tensors["lm_head.weight"]
    return tensors, stored


def unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of a q or k projection's rows: within each head, llama.cpp keeps
    the two halves of every rotary pair side by side; the Hugging Face layout keeps them D/2 apart."""
    if w.shape[0] % (2 * heads):
        raise GGUFError(f"a projection with {w.shape[0]} rows cannot hold {heads} heads of rotary pairs")
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def check_rope_freqs(gguf: GGUFFile, expected_divisors: torch.Tensor) -> None:
    """The stretched frequencies the config now makes are the ones the file stores."""
    if ROPE_FREQS in gguf.tensors:
        stored = gguf.read(ROPE_FREQS)
        if stored.shape != expected_divisors.shape or not torch.allclose(stored, expected_divisors, rtol=1e-3):
            raise GGUFError("its rotary frequencies (rope_freqs) are stretched in a way this engine does not "
                            "compute (it knows Llama 3.1's)")


def storage_note(gguf: GGUFFile) -> str:
    """One sentence for the model facts: how the file keeps the weights, and what was done to them."""
    sizes: dict[str, int] = {}
    for t in gguf.tensors.values():
        sizes[t.kind] = sizes.get(t.kind, 0) + math.prod(t.shape)
    main = max(sizes, key=sizes.get)
    if main == "F32":
        return "The file keeps every weight as a 32-bit number, as it was trained."
    rest = [k for k in sorted(sizes, key=sizes.get, reverse=True) if k != main]
    share = f"{sizes[main] / sum(sizes.values()):.0%} of the weights" + (f"; the rest {', '.join(rest)}" if rest else "")
    if main in ("F16", "BF16"):
        return f"Stored as {main} ({share}): {STORAGE[main]}; they are turned back into 32-bit numbers here."
    return (f"De-quantized from {main} ({share}): in the file {STORAGE[main]}, so each weight is one of a few "
            "levels near its trained value; those levels are turned back into 32-bit numbers here, and the "
            "model computes with them.")
