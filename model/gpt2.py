"""GPT-2 in PyTorch, written to be read and looked inside.

The classes follow nanoGPT's model.py and keep GPT-2's parameter names
(wte, wpe, h.N.ln_1, attn.c_attn, ...), so a Hugging Face checkpoint loads by a
name map plus four transposes (see model/loading.py). The KV cache lives in
model/kv_cache.py; a CPU speed layer for inference, applied at load time, in
model/speed.py.

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

from model.kv_cache import CacheStep, KVCache
from model.record import NOTHING, Recorder


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
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)

        if kv is None:  # plain causal over the T new tokens
            mask, is_causal = None, True
        else:  # the new keys join the cached ones; kv says which keys each query sees
            k, v = kv.update(layer, k, v)  # (B, H, S, D)
            mask, is_causal = kv.mask, kv.is_causal

        if rec.wants(f"blocks.{layer}.attn.pattern"):
            # explicit softmax so the pattern can be recorded
            att = (q @ k.transpose(-2, -1)) / math.sqrt(D)  # (B, H, T, S)
            if is_causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf"))
            att = att.softmax(dim=-1)
            att = rec(f"blocks.{layer}.attn.pattern", att)
            y = F.dropout(att, self.dropout, self.training) @ v
        else:
            drop = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=drop)
        y = rec(f"blocks.{layer}.attn.z", y.transpose(1, 2))  # (B, T, H, D): each head's output
        y = y.contiguous().view(B, T, C)  # re-assemble heads side by side
        return self.c_proj(y)


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

    def forward(self, x: torch.Tensor, kv: CacheStep | None = None, rec: Recorder = NOTHING) -> torch.Tensor:
        """The residual stream x (B, T, C) in, with what attention and then the MLP add to it."""
        i = self.layer
        x = rec(f"blocks.{i}.resid_pre", x)
        a = self.drop(self.attn(self.ln_1(x), i, kv, rec))
        a = rec(f"blocks.{i}.attn_out", a)
        x = rec(f"blocks.{i}.resid_mid", x + a)
        m = self.drop(self.mlp(self.ln_2(x), i, rec))
        m = rec(f"blocks.{i}.mlp_out", m)
        return rec(f"blocks.{i}.resid_post", x + m)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, init: bool = True):
        """init=False leaves torch's default initialisation (for weights about to be loaded)."""
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_ctx, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        # the lm head's product (x, wte.weight) -> logits; model/speed.py may swap in a faster one
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

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None, rec: Recorder = NOTHING) -> torch.Tensor:
        """Token ids (B, T) -> final layer-normed hidden states (B, T, C)."""
        B, T = idx.shape
        kv = None
        if cache is not None:
            kv = cache.step(T)  # where the new keys go and what each query sees, for every layer
            pos, length = kv.positions, kv.S  # (B or 1, T)
        else:
            pos = torch.arange(T, device=idx.device)[None]  # (1, T)
            length = T
        if length > self.config.n_ctx:
            raise ValueError(f"sequence of {length} tokens is longer than the context of {self.config.n_ctx}")
        tok = self.wte(idx)  # (B, T, C)
        pe = self.wpe(pos)   # (B or 1, T, C)
        tok = rec("embed", tok)
        if rec.wants("pos_embed"):
            pe = rec("pos_embed", pe.expand_as(tok))
        x = self.drop(tok + pe)
        for block in self.h:
            x = block(x, kv, rec)
        if kv is not None:
            kv.finish(T)
        return rec("ln_final", self.ln_f(x))

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., C) -> logits (..., V): the lm head, tied to the token embedding."""
        return self.head_product(x, self.wte.weight)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, rec: Recorder | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V), or (B, 1, V) with last_only.

        Pass a Recorder to capture activations by name, or to replace them with its hooks
        (see model/record.py); without one the forward records nothing and pays nothing.
        """
        rec = rec or NOTHING
        x = self.hidden(idx, cache, rec)
        if last_only:
            x = x[:, -1:]
        return rec("logits", self.unembed(x))
