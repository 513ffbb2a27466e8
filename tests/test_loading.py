"""Checkpoint loading: round trips, export to transformers, hub names, and clear errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import expect_error
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

import model.loading as loading
from model.gpt2 import GPT
from model.gpt2_checkpoint import is_transposed, save_checkpoint
from model.model_card import ModelCard, Source
from model.loading import CheckpointError, load_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def model_dir(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint, free to break."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def edit_tensors(directory: Path, **changes: torch.Tensor | None) -> None:
    """Replace tensors in model.safetensors by their unprefixed name; None removes one."""
    path = directory / "model.safetensors"
    tensors = load_file(path)
    for name, t in changes.items():
        key = name if name == "lm_head.weight" else f"transformer.{name}"
        tensors.pop(key, None)
        if t is not None:
            tensors[key] = t
    save_file(tensors, path)


def fake_hub_cache(root: Path, repo_id: str, checkpoint: Path) -> Path:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


# --- loading what we and transformers write ----------------------------------------------------

def test_round_trip(tiny_model: GPT, tiny_checkpoint: Path) -> None:
    loaded = load_model(tiny_checkpoint)
    assert loaded.config == tiny_model.config
    assert loaded.name == tiny_checkpoint.name
    assert loaded.source == str(tiny_checkpoint.resolve()) and loaded.path == tiny_checkpoint.resolve()
    assert loaded.dtype == torch.float32 and loaded.card is None
    assert not loaded.model.training
    want = tiny_model.state_dict()
    got = loaded.model.state_dict()
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
        assert got[name].is_contiguous() and got[name].device.type == "cpu"


@torch.no_grad()
def test_export_loads_in_transformers(tiny_model: GPT, tiny_checkpoint: Path) -> None:
    hf = GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()
    ids = torch.randint(0, tiny_model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hf(ids).logits, tiny_model(ids), atol=1e-5, rtol=1e-5)


def test_half_precision_is_upcast(tiny_model: GPT, tmp_path: Path) -> None:
    save_checkpoint(tiny_model, tmp_path, dtype=torch.float16)
    loaded = load_model(tmp_path)
    assert loaded.dtype == torch.float32
    for name, p in loaded.model.state_dict().items():
        assert p.dtype == torch.float32
        assert torch.equal(p, tiny_model.state_dict()[name].half().float()), name
    assert load_model(tmp_path, dtype=torch.bfloat16).model.wte.weight.dtype == torch.bfloat16
    assert load_model(tmp_path, dtype="float16").dtype == torch.float16
    with pytest.raises(ValueError, match="floating point"):
        load_model(tmp_path, dtype="int8")


def test_tied_lm_head_is_accepted(model_dir: Path) -> None:
    wte = load_file(model_dir / "model.safetensors")["transformer.wte.weight"]
    edit_tensors(model_dir, **{"lm_head.weight": wte.clone()})
    load_model(model_dir)
    edit_tensors(model_dir, **{"lm_head.weight": wte + 1})
    with pytest.raises(CheckpointError, match="lm_head.weight differs from wte.weight"):
        load_model(model_dir)


def test_model_card(model_dir: Path) -> None:
    (model_dir / "model_card.json").write_text(json.dumps({"name": "deepdive-tiny", "params": 123}))
    assert load_model(model_dir).card == ModelCard()  # nothing it knows: every field empty
    card = {"description": "tiny", "training": {"tokens_seen": 1200, "steps": True},
            "evaluation": {"tinystories_valid_loss": 2.7, "baselines": {"unigram": 6.1, "bad": "x"}},
            "corpus": {"tales": {"weight": 0.4, "train_tokens": 99, "val_tokens": float("nan")}, "junk": 3},
            "licences": {"tales": "public domain"}}
    (model_dir / "model_card.json").write_text(json.dumps(card))
    assert load_model(model_dir).card == ModelCard(
        description="tiny", training_tokens=1200, training_steps=None, validation_loss=2.7,
        baselines={"unigram": 6.1}, corpus=(Source("tales", weight=0.4, train_tokens=99),),
        licences={"tales": "public domain"})
    (model_dir / "model_card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model_card\.json: not valid JSON"):
        load_model(model_dir)


# --- broken checkpoints: one clear CheckpointError each ----------------------------------------

def test_missing_directory(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope", r"nope: not found — a model is a directory with config\.json")
    (tmp_path / "file").write_text("x")
    expect_error(tmp_path / "file", r"file: not a directory")
    expect_error(str(tmp_path / "nope"), r"nope: not found")  # a path, never taken for a hub name


def test_missing_config(model_dir: Path) -> None:
    (model_dir / "config.json").unlink()
    expect_error(model_dir, r"model/config\.json: not found — a model directory needs config\.json and "
                            r"model\.safetensors \(or pytorch_model\.bin\)")


def test_missing_weights(model_dir: Path) -> None:
    (model_dir / "model.safetensors").unlink()
    expect_error(model_dir, r"model/model\.safetensors: not found")


def test_truncated_safetensors(model_dir: Path) -> None:
    path = model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_error(model_dir, r"model\.safetensors is truncated or corrupt \(.+\)")


def test_corrupt_bin(model_dir: Path, tiny_model: GPT) -> None:
    (model_dir / "model.safetensors").unlink()
    path = model_dir / "pytorch_model.bin"
    torch.save(tiny_model.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_error(model_dir, r"pytorch_model\.bin is truncated or corrupt \(.+\)")
    path.write_bytes(b"\x80\x02garbage" * 100)
    expect_error(model_dir, r"pytorch_model\.bin is corrupt or holds more than tensors \(Unsupported operand \d+\)")


class Exploit:
    """Unpickling this would create a file: what weights_only must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_bin_never_runs_code(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"wte.weight": Exploit(marker)}, model_dir / "pytorch_model.bin")
    expect_error(model_dir, r"pytorch_model\.bin is corrupt or holds more than tensors \(Unsupported global: "
                            r"GLOBAL io\.open .*\); only plain weights are loaded")
    assert not marker.exists()


@pytest.mark.parametrize("changes, pattern", [
    ({"model_type": "bert"}, r"config\.json: model_type 'bert' is not supported"),
    ({"activation_function": "relu"}, r"activation_function 'relu' is not supported"),
    ({"n_inner": 100}, r"n_inner=100 is not supported \(expected null or 4 \* n_embd = 256\)"),
    ({"scale_attn_by_inverse_layer_idx": True}, r"scale_attn_by_inverse_layer_idx=True is not supported"),
    ({"n_head": 5}, r"config\.json: n_embd \(64\) must be a multiple of n_head \(5\)"),
])
def test_unsupported_config(model_dir: Path, changes: dict, pattern: str) -> None:
    edit_config(model_dir, **changes)
    expect_error(model_dir, pattern)


def test_config_not_json(model_dir: Path) -> None:
    (model_dir / "config.json").write_text("{")
    expect_error(model_dir, r"config\.json: not valid JSON")


def test_gpt2_config_variants_load(model_dir: Path) -> None:
    """What the real hub configs say (gpt2 ... gpt2-xl, distilgpt2) is accepted."""
    edit_config(model_dir, n_inner=None, activation_function="gelu_pytorch_tanh", architectures=["GPT2Model"],
                scale_attn_weights=True, task_specific_params={"text-generation": {"do_sample": True}})
    config = json.loads((model_dir / "config.json").read_text())
    for key in ("n_ctx", "torch_dtype", "tie_word_embeddings"):
        config.pop(key)
    (model_dir / "config.json").write_text(json.dumps(config))
    assert load_model(model_dir).config.n_ctx == config["n_positions"]


def test_shape_mismatch(model_dir: Path) -> None:
    edit_config(model_dir, n_embd=32)
    expect_error(model_dir, re.escape("model.safetensors: tensor wte.weight has shape (50257, 64), "
                                      "expected (50257, 32)"))


def test_shape_mismatch_in_file_layout(model_dir: Path) -> None:
    # Conv1D weights are (in, out) in the file, and the message speaks of the file
    edit_tensors(model_dir, **{"h.0.attn.c_attn.weight": torch.zeros(64, 100)})
    expect_error(model_dir, re.escape("model.safetensors: tensor h.0.attn.c_attn.weight has shape (64, 100), "
                                      "expected (64, 192)"))


def test_missing_tensor(model_dir: Path) -> None:
    edit_tensors(model_dir, **{"h.1.mlp.c_fc.bias": None})
    expect_error(model_dir, r"model\.safetensors: missing tensor h\.1\.mlp\.c_fc\.bias$")
    edit_config(model_dir, n_layer=3)
    expect_error(model_dir, r"missing tensor h\.1\.mlp\.c_fc\.bias \(and 12 more\)")


def test_unexpected_tensor(model_dir: Path) -> None:
    edit_config(model_dir, n_layer=1)
    expect_error(model_dir, r"model\.safetensors: unexpected tensor h\.1\.\S+ \(and 11 more\)$")


# --- hub names -----------------------------------------------------------------------------------

@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, with the network switched off."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.mark.parametrize("repo_id", ["gpt2", "openai-community/gpt2-medium"])
def test_hub_name_from_cache(offline_hub: Path, tiny_checkpoint: Path, repo_id: str) -> None:
    snapshot = fake_hub_cache(offline_hub, repo_id, tiny_checkpoint)
    loaded = load_model(repo_id)
    assert loaded.name == loaded.source == repo_id
    assert loaded.path == snapshot


def test_hub_cache_from_hf_home(offline_hub: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE")  # HF_HOME/hub is the default cache
    fake_hub_cache(offline_hub, "distilgpt2", tiny_checkpoint)
    assert load_model("distilgpt2").path.parent.parent.name == "models--distilgpt2"


def test_hub_name_with_bin_only(offline_hub: Path, tiny_checkpoint: Path, tiny_model: GPT) -> None:
    snapshot = fake_hub_cache(offline_hub, "gpt2", tiny_checkpoint)
    (snapshot / "model.safetensors").unlink()
    torch.save({k: (v.t() if is_transposed(k) else v) for k, v in tiny_model.state_dict().items()},
               snapshot / "pytorch_model.bin")
    assert torch.equal(load_model("gpt2").model.h[1].mlp.c_fc.weight, tiny_model.h[1].mlp.c_fc.weight)


def test_directory_wins_over_hub_name(offline_hub: Path, tiny_checkpoint: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(tiny_checkpoint, tmp_path / "gpt2")
    monkeypatch.chdir(tmp_path)
    assert load_model("gpt2").path == (tmp_path / "gpt2").resolve()


def test_hub_name_offline_not_cached(offline_hub: Path) -> None:
    message = expect_error("gpt2", r"gpt2: no such directory, and not in the Hugging Face cache")
    assert str(offline_hub) in message and "HF_HUB_OFFLINE" in message


def test_hub_download(offline_hub: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []

    def fake_download(repo_id: str, *, cache_dir: Path, allow_patterns: list[str]) -> str:
        calls.append(allow_patterns)
        return str(fake_hub_cache(Path(cache_dir), repo_id, tiny_checkpoint))

    monkeypatch.setattr(loading, "snapshot_download", fake_download)
    assert load_model("gpt2").name == "gpt2"
    # the weights, shards with their index, a Llama-family tokenizer; not the .bin as well: half the download
    assert calls == [["config.json", "model.safetensors", "model.safetensors.index.json",
                      "model-*-of-*.safetensors", "tokenizer.json"]]

    def no_network(repo_id: str, **kwargs) -> str:
        raise ConnectionError("Cannot reach huggingface.co")

    monkeypatch.setattr(loading, "snapshot_download", no_network)
    expect_error("distilgpt2", r"distilgpt2: .*the download failed \(ConnectionError: Cannot reach huggingface\.co\)")
