"""GPT-2 in PyTorch, written to be read and looked inside.

The classes follow nanoGPT's model.py and keep GPT-2's parameter names
(wte, wpe, h.N.ln_1, attn.c_attn, ...), so a Hugging Face checkpoint loads by a
name map plus four transposes (see model/formats/gpt2_checkpoint.py). What every net shares (the
loop over the blocks, attention's arithmetic, the residual stream's hook points)
is in model/nets/net.py; the KV cache in model/nets/kv_cache.py; a CPU speed layer for
inference, applied at load time, in model/nets/speed.py.

Shapes in comments: B batch, T new tokens, S cached + new tokens (keys),
C n_embd, H n_head, D head size (C // H), V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.nets.kv_cache import CacheStep
from model.nets.net import CausalLM, attend, residual
from model.nets.record import NOTHING, Recorder


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_ctx: int = 1024
    vocab_size: int = 50257
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

    @property
    def n_kv_head(self) -> int:
        """Key/value heads: one per query head in GPT-2 (grouped-query models share them)."""
        return self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, layer: int, kv: CacheStep | None, rec: Recorder) -> torch.Tensor:
        """The stream's normed x (B, T, C) -> what attention writes back (B, T, C)."""
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        drop = self.dropout if self.training else 0.0
        return self.c_proj(attend(q, k, v, layer, kv, rec, drop))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor, layer: int, rec: Recorder) -> torch.Tensor:
        h = self.gelu(self.c_fc(x))  # (B, T, 4C)
        h = rec(f"blocks.{layer}.mlp.post", h)
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, where: None = None, kv: CacheStep | None = None,
                rec: Recorder = NOTHING) -> torch.Tensor:
        """The residual stream x (B, T, C) in, with what attention and then the MLP add to it (positions
        were added to the stream before block 0: `where` is None)."""
        i = self.layer
        return residual(i, x, lambda h: self.attn(self.ln_1(h), i, kv, rec), lambda h: self.mlp(self.ln_2(h), i, rec),
                        rec, self.drop)


class GPT(CausalLM):
    def __init__(self, config: GPTConfig, init: bool = True):
        """init=False leaves torch's default initialisation (for weights about to be loaded)."""
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_ctx, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        # the lm head's product (x, wte.weight) -> logits; model/nets/speed.py may swap in a faster one
        self.head_product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.linear
        if not init:
            return
        self.apply(self._init_weights)
        # GPT-2's scaled init for the projections that write into the residual stream
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> dict[str, int]:
        """Parameter count by part (the lm head is wte, counted once)."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        parts = {
            "token_embedding": self.wte.weight.numel(),
            "position_embedding": self.wpe.weight.numel(),
            "attention": sum(count(b.attn) for b in self.h),
            "mlp": sum(count(b.mlp) for b in self.h),
            "layer_norm": sum(count(b.ln_1) + count(b.ln_2) for b in self.h) + count(self.ln_f),
        }
        parts["total"] = sum(parts.values())
        return parts

    @property
    def blocks(self) -> nn.ModuleList:
        return self.h

    @property
    def mlp_width(self) -> int:
        return 4 * self.config.n_embd

    def embed(self, idx: torch.Tensor, pos: torch.Tensor, rec: Recorder) -> tuple[torch.Tensor, None]:
        """Token ids (B, T) at positions (B or 1, T) -> token plus position embeddings (B, T, C): in GPT-2
        positions enter the stream here, once, from a learned table."""
        tok = rec("embed", self.wte(idx))  # (B, T, C)
        pe = self.wpe(pos)  # (B or 1, T, C)
        if rec.wants("pos_embed"):
            pe = rec("pos_embed", pe.expand_as(tok))
        return self.drop(tok + pe), None

    def head_weight(self) -> torch.Tensor:
        return self.wte.weight  # the lm head is tied to the token embedding

    def architecture(self) -> dict:
        return {"model_type": "gpt2", "positions": "learned", "norm": "layernorm", "mlp": "gelu",
                "n_kv_head": self.config.n_kv_head, "head_dim": self.config.head_dim, "n_inner": self.mlp_width,
                "tied_head": True, "final_norm": sum(p.numel() for p in self.ln_f.parameters())}
