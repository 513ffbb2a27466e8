"""Shared fixtures: a tiny random GPT-2 and the same model saved as a checkpoint; an engine
and a test client for modules that define a `settings` fixture.

The model and checkpoint are session-scoped so the suite builds them once: treat them as
read-only (copy the checkpoint directory before breaking it, deepcopy the model before
changing it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.serving.engine import Engine
from app.main import create_app

from model.nets.gpt2 import GPT, GPTConfig
from model.formats.gpt2_checkpoint import save_checkpoint


@pytest.fixture(scope="session")
def tiny_config() -> GPTConfig:
    # GPT-2's real vocabulary, so the tokenizer's ids are valid inputs
    return GPTConfig(n_layer=2, n_head=4, n_embd=64, n_ctx=64, vocab_size=50257)


@pytest.fixture(scope="session")
def tiny_model(tiny_config: GPTConfig) -> GPT:
    """Our GPT with seeded random weights, in eval mode.

    Biases and layer-norm parameters are random too (GPT's init makes them 0
    and 1), so a mix-up between, say, ln_1 and ln_2 changes the outputs.
    """
    with torch.random.fork_rng():  # leave the global RNG as other tests expect it
        torch.manual_seed(0)
        model = GPT(tiny_config)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:
                    p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model: GPT, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with config.json + model.safetensors holding tiny_model."""
    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("tiny-gpt2"))


# for a module that defines `settings` (module-scoped): the app on those settings, started once
@pytest.fixture(scope="module")
def engine(settings: Settings) -> Engine:
    return Engine.load(settings)


@pytest.fixture(scope="module")
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


# ---- Llama-family models (tests/llama_fixtures.py), for the page walks over both architectures ----

LLAMA_VARIANTS = ("llama", "llama-untied", "mistral")


@pytest.fixture(scope="session")
def llama_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """variant -> (checkpoint directory, transformers' model read from it), for the variants above:
    grouped-query attention with a tied head and Llama 3's tokenizer; an untied head and SmolLM2's
    tokenizer; Mistral's SentencePiece-style tokenizer."""
    from llama_fixtures import save_reference

    root = tmp_path_factory.mktemp("llama-pages")
    out = {}
    for variant in LLAMA_VARIANTS:
        directory = root / f"tiny-{variant}"
        out[variant] = (directory, save_reference(variant, directory))
    return out


@pytest.fixture(scope="session")
def llama_served(llama_checkpoints: dict) -> Iterator[dict]:
    """variant -> (engine, client), every app started once."""
    out = {}
    for variant, (directory, _) in llama_checkpoints.items():
        engine = Engine.load(Settings(model=str(directory), max_new_tokens=40))
        out[variant] = (engine, TestClient(create_app(engine.settings, engine)))
    for _, client in out.values():
        client.__enter__()
    yield out
    for _, client in out.values():
        client.__exit__(None, None, None)
