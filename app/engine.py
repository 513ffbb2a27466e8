"""The one object routes talk to: it owns the loaded model and the tokenizer.

Model work is synchronous PyTorch; routes call it through `run` so it happens
off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from app.config import Settings
from model.loading import LoadedModel, load_model
from model.tokenizer import gpt2_encoding


@dataclass
class Engine:
    loaded: LoadedModel
    settings: Settings

    @classmethod
    def load(cls, settings: Settings) -> "Engine":
        if settings.threads:
            torch.set_num_threads(settings.threads)
        gpt2_encoding()  # build the tokenizer now, not on the first request
        return cls(load_model(settings.model), settings)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def info(self) -> dict:
        model, cfg = self.loaded.model, self.loaded.config
        return {
            "name": self.loaded.name,
            "source": str(self.loaded.source),
            "parameters": model.num_parameters(),
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "n_embd": cfg.n_embd,
            "n_ctx": cfg.n_ctx,
            "vocab_size": cfg.vocab_size,
            "card": self.loaded.card,
        }
