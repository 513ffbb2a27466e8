"""The architectures the engine computes, by config.json's model_type, each with what turns its
checkpoints into one of our nets (as vLLM registers its model classes). Adding an architecture is a
net (a CausalLM, model/nets/net.py), its checkpoint module, and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.formats import gpt2_checkpoint, llama_checkpoint
from model.formats.gguf_file import GGUFFile
from model.nets.gpt2 import GPT
from model.tokenizers.hf_tokenizer import HFTokenizer
from model.nets.llama import MODEL_TYPES as LLAMA_TYPES
from model.nets.llama import Llama
from model.nets.net import CausalLM
from model.tokenizers.tokenizer import Tokenizer
from model.formats.weights import CheckpointError

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Architecture:
    net: type[CausalLM]
    read_config: Callable[[Path, dict], Any]  # config.json's contents (path for messages) -> the net's config
    read_state: Callable[[Path, State, torch.dtype | None], State]  # a directory's weights -> the net's, checked
    gguf_state: Callable[[Path, State, State, torch.dtype, dict[str, str]], State]  # a GGUF file's, the same
    read_tokenizer: Callable[[Path, str], Tokenizer | HFTokenizer]  # the directory's (or GPT-2's own)
    check_gguf: Callable[[GGUFFile, Any], None] = lambda gguf, config: None  # what only a GGUF file can get wrong


GPT2 = Architecture(GPT, gpt2_checkpoint.read_config, gpt2_checkpoint.read_state, gpt2_checkpoint.gguf_state,
                    gpt2_checkpoint.read_tokenizer)
LLAMA = Architecture(Llama, llama_checkpoint.read_config, llama_checkpoint.read_state, llama_checkpoint.gguf_state,
                     llama_checkpoint.read_tokenizer, llama_checkpoint.check_gguf)
ARCHITECTURES = {"gpt2": GPT2, **{t: LLAMA for t in LLAMA_TYPES}}


def architecture(path: Path, cfg: dict) -> Architecture:
    """The architecture a config.json's contents name; path names the file in messages."""
    found = ARCHITECTURES.get(cfg.get("model_type"))
    if found is None:
        known = ", ".join(repr(t) for t in ARCHITECTURES)
        raise CheckpointError(f"{path}: model_type {cfg.get('model_type')!r} is not supported (expected one of "
                              f"{known})")
    return found
