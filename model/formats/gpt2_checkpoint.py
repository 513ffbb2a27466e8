"""GPT-2's checkpoints in the Hugging Face layout <-> model/nets/gpt2.py.

A GPT-2 checkpoint directory holds config.json and model.safetensors (or the older
pytorch_model.bin). GPT-2 stores its projections as Conv1D, whose weight is (in, out):
the transpose of nn.Linear's (out, in). Loading is a name map plus those transposes.
Its tokenizer is GPT-2's own, vendored in model/assets, unless the checkpoint brings a tokenizer.json for a
vocabulary of another size (a live-trained byte model's, model/tokenizers/bytes.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.nets.gpt2 import GPT, GPTConfig
from model.tokenizers.hf_tokenizer import HFTokenizer
from model.tokenizers.tokenizer import Tokenizer, gpt2_tokenizer
from model.formats.weights import CheckpointError, check_tensors, read_tensors

# Conv1D weights in GPT-2 checkpoints, stored transposed relative to nn.Linear
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# causal-mask buffers that old checkpoints saved next to the weights; we build the mask ourselves
IGNORED = (".attn.bias", ".attn.masked_bias")
# GPT2Config's defaults, for config.json files that leave a key out
HF_DEFAULTS = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257,
               "layer_norm_epsilon": 1e-5}
# GPT-2 variants our forward does not compute: option -> the only value we support
FIXED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are the tanh approximation


def is_transposed(name: str) -> bool:
    return name.endswith(TRANSPOSED)


def hf_config(config: GPTConfig, dtype: torch.dtype) -> dict:
    # <|endoftext|> is the last id both in GPT-2's vocabulary (50256) and in a byte model's (256)
    eos = config.vocab_size - 1
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
        "bos_token_id": eos,
        "eos_token_id": eos,
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


def read_config(path: Path, cfg: dict) -> GPTConfig:
    """A GPT-2 config.json's contents -> GPTConfig, refusing the variants model/nets/gpt2.py does not compute."""
    act = cfg.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"{path}: activation_function {act!r} is not supported (expected 'gelu_new')")
    for key, want in FIXED.items():
        if cfg.get(key, want) != want:
            raise CheckpointError(f"{path}: {key}={cfg[key]!r} is not supported (expected {want!r})")
    get = lambda key: cfg.get(key, HF_DEFAULTS[key])  # noqa: E731
    try:
        config = GPTConfig(n_layer=int(get("n_layer")), n_head=int(get("n_head")), n_embd=int(get("n_embd")),
                           n_ctx=int(get("n_positions")), vocab_size=int(get("vocab_size")),
                           layer_norm_epsilon=float(get("layer_norm_epsilon")))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    if cfg.get("n_inner") not in (None, 4 * config.n_embd):
        raise CheckpointError(f"{path}: n_inner={cfg['n_inner']!r} is not supported "
                              f"(expected null or 4 * n_embd = {4 * config.n_embd})")
    return config


def read_tokenizer(directory: Path, name: str) -> Tokenizer | HFTokenizer:
    """GPT-2's own tokenizer; a checkpoint whose vocabulary is not GPT-2's reads its tokenizer.json."""
    path = directory / "tokenizer.json"
    vocab_size = read_config(directory / "config.json", json.loads((directory / "config.json").read_text())).vocab_size
    if vocab_size == HF_DEFAULTS["vocab_size"] or not path.is_file():
        return gpt2_tokenizer()
    try:
        return HFTokenizer.from_checkpoint(directory, name)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def read_state(directory: Path, expected: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The weights file -> a state dict for our GPT (fp32 unless dtype says otherwise), checked against
    expected's names and shapes."""
    path, loaded = read_tensors(directory)
    # GPT2LMHeadModel saves "transformer.h.0...", GPT2Model (the original hub files) saves "h.0..."
    tensors = {k.removeprefix("transformer."): t for k, t in loaded.items() if not k.endswith(IGNORED)}
    del loaded
    return gpt2_state(path, tensors, expected, dtype or torch.float32)


def gpt2_state(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], dtype: torch.dtype,
               stored: Callable[[str], str] = str) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors by name (without "transformer.") -> our GPT's state dict, checked."""
    lm_head = tensors.pop("lm_head.weight", None)
    check_tensors(path, tensors, expected, stored=stored, transposed=is_transposed)
    if lm_head is not None and not torch.equal(lm_head, tensors["wte.weight"]):
        raise CheckpointError(f"{path}: lm_head.weight differs from wte.weight (GPT-2 ties the two)")

    state = {}
    for name in expected:  # pop as we go, so each original can be freed once converted
        t = tensors.pop(name).to(dtype)
        state[name] = (t.t() if is_transposed(name) else t).contiguous()
    return state


def gguf_state(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], dtype: torch.dtype,
               stored: dict[str, str]) -> dict[str, torch.Tensor]:
    """A GGUF file's tensors, already under Hugging Face names (model/formats/gguf_checkpoint.py) -> our GPT's state
    dict; `stored` gives each name as the file spells it, for messages."""
    return gpt2_state(path, tensors, expected, dtype, stored=lambda n: stored.get(n, n))
