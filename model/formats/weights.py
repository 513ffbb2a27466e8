"""A checkpoint's tensors read from its files, and checked against the model they are for.

Each architecture's own names and layouts are in model/formats/gpt2_checkpoint.py and
model/formats/llama_checkpoint.py; loading a model is model/loading.py.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
SHARD_INDEX = "model.safetensors.index.json"  # a checkpoint in several files: which tensor is in which


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message names the file or tensor."""


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
