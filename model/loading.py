"""Hugging Face checkpoint layout <-> our GPT module.

A GPT-2 checkpoint directory holds config.json and model.safetensors (or the
older pytorch_model.bin). GPT-2 stores its projections as Conv1D, whose weight
is (in, out): the transpose of nn.Linear's (out, in). Loading is a name map
plus those transposes.

load_model() takes a directory or a hub name ("gpt2", "distilgpt2",
"openai-community/gpt2-medium"); hub names come from the local Hugging Face
cache, or are downloaded when the network allows. Anything wrong with a
checkpoint ends in one CheckpointError whose message says what and where.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.gpt2 import GPT, GPTConfig
from model.model_card import ModelCard, parse_card
from model.speed import speed_up

# Conv1D weights in GPT-2 checkpoints, stored transposed relative to nn.Linear
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# causal-mask buffers that old checkpoints saved next to the weights; we build the mask ourselves
IGNORED = (".attn.bias", ".attn.masked_bias")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
# GPT2Config's defaults, for config.json files that leave a key out
HF_DEFAULTS = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257,
               "layer_norm_epsilon": 1e-5}
# GPT-2 variants our forward does not compute: option -> the only value we support
FIXED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are the tanh approximation


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message names the file or tensor."""


@dataclass
class LoadedModel:
    model: GPT            # in eval mode, on the requested device and dtype
    name: str             # for display: the hub name or the directory's name
    source: str           # the hub name, or the directory path as resolved
    path: Path            # the directory the files were read from
    config: GPTConfig
    dtype: torch.dtype
    card: ModelCard | None  # model_card.json, read once, if the directory has one


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
    """Load a GPT-2 checkpoint from a directory or a Hugging Face hub name.

    Weights are float32 unless dtype says otherwise (fp16/bf16 checkpoints are upcast).
    The model comes in eval mode with model/speed.py's inference products swapped in.
    """
    dtype = _resolve_dtype(dtype)
    path = Path(ref).expanduser().absolute()
    if isinstance(ref, Path) or path.exists() or not is_hub_name(str(ref)):
        if not path.is_dir():
            what = "not a directory" if path.exists() else "not found"
            raise CheckpointError(f"{path}: {what} — a model is a directory with config.json and "
                                  "model.safetensors (or pytorch_model.bin), or a Hugging Face hub name")
        path = path.resolve()
        name, source = path.name, str(path)
    else:
        name = source = str(ref)
        path = _hub_snapshot(name)

    config = read_config(path / "config.json")
    # the weights come from the file, so GPT-2's init is skipped; not built on the meta device, whose
    # default init goes through Python decompositions that import torch._dynamo (1.3 s of start-up)
    model = GPT(config, init=False)
    state = read_weights(path, model.state_dict(), dtype)
    model.load_state_dict(state, assign=True)
    return LoadedModel(model=speed_up(model.to(device).eval()), name=name, source=source, path=path,
                       config=config, dtype=dtype, card=read_card(path))


def read_config(path: Path) -> GPTConfig:
    """config.json -> GPTConfig, refusing anything our GPT-2 does not compute."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not found — a model directory needs config.json and "
                              "model.safetensors (or pytorch_model.bin)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    if cfg.get("model_type") != "gpt2":
        raise CheckpointError(f"{path}: model_type {cfg.get('model_type')!r} is not GPT-2 (expected 'gpt2')")
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


def read_weights(directory: Path, expected: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The weights file -> a state dict for our GPT, checked against expected's names and shapes."""
    path = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if path is None:
        raise CheckpointError(f"{directory / WEIGHT_FILES[0]}: not found — a model directory needs "
                              "model.safetensors (or pytorch_model.bin) next to config.json")
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

    # GPT2LMHeadModel saves "transformer.h.0...", GPT2Model (the original hub files) saves "h.0..."
    tensors = {k.removeprefix("transformer."): t for k, t in loaded.items() if not k.endswith(IGNORED)}
    del loaded
    lm_head = tensors.pop("lm_head.weight", None)
    missing = [n for n in expected if n not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing tensor {missing[0]}{more}")
    unexpected = [n for n in tensors if n not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{path}: unexpected tensor {unexpected[0]}{more}")
    for name, p in expected.items():
        want = tuple(p.shape[::-1]) if is_transposed(name) else tuple(p.shape)  # as the file stores it
        got = tuple(tensors[name].shape)
        if got != want:
            raise CheckpointError(f"{path}: tensor {name} has shape {got}, expected {want} (from config.json)")
        if not tensors[name].is_floating_point():
            raise CheckpointError(f"{path}: tensor {name} has dtype {tensors[name].dtype}, expected floating point")
    if lm_head is not None and not torch.equal(lm_head, tensors["wte.weight"]):
        raise CheckpointError(f"{path}: lm_head.weight differs from wte.weight (GPT-2 ties the two)")

    state = {}
    for name in expected:  # pop as we go, so each original can be freed once converted
        t = tensors.pop(name).to(dtype)
        state[name] = (t.t() if is_transposed(name) else t).contiguous()
    return state


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
    for weights in WEIGHT_FILES:
        found = [try_to_load_from_cache(repo_id, f, cache_dir=cache) for f in ("config.json", weights)]
        if all(isinstance(f, str) for f in found):
            return Path(found[0]).parent
    if hub_offline():
        raise CheckpointError(f"{repo_id}: no such directory, and not in the Hugging Face cache ({cache}); "
                              "HF_HUB_OFFLINE is set, so it cannot be downloaded — download it once with "
                              "network access, or pass a model directory")
    try:
        snapshot = Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=["config.json", WEIGHT_FILES[0]]))
        if not (snapshot / WEIGHT_FILES[0]).is_file():  # older repos have only the .bin
            snapshot = Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=[WEIGHT_FILES[1]]))
    except Exception as e:  # no network, no such repo, gated, hub down: all mean "cannot get it"
        reason = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{repo_id}: no such directory, not in the Hugging Face cache ({cache}), "
                              f"and the download failed ({type(e).__name__}: {reason})") from None
    return snapshot


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be a floating point torch dtype, got {dtype!r}")
    return resolved
