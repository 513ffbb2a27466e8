"""Hugging Face checkpoint layout <-> our GPT module.

A GPT-2 checkpoint directory holds config.json and model.safetensors (or the
older pytorch_model.bin). GPT-2 stores its projections as Conv1D, whose weight
is (in, out): the transpose of nn.Linear's (out, in). Loading is a name map
plus those transposes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.gpt2 import GPT, GPTConfig

# Conv1D weights in GPT-2 checkpoints, stored transposed relative to nn.Linear
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def is_transposed(name: str) -> bool:
    return name.endswith(TRANSPOSED)


def hf_config(config: GPTConfig, dtype: torch.dtype) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "n_positions": config.n_ctx,
        "n_ctx": config.n_ctx,
        "n_inner": None,
        "vocab_size": config.vocab_size,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "activation_function": "gelu_new",
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "tie_word_embeddings": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def save_checkpoint(model: GPT, directory: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write config.json + model.safetensors in the layout GPT2LMHeadModel reads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, p in model.state_dict().items():
        t = p.detach().to("cpu", dtype)
        tensors[f"transformer.{name}"] = (t.t() if is_transposed(name) else t).contiguous()
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config(model.config, dtype), indent=2) + "\n")
    return directory
