"""What every net here shares: the decoder loop around the blocks, attention's arithmetic and the
residual stream's hook points. model/nets/gpt2.py and model/nets/llama.py say only how they differ (how positions
enter, the norms, the MLP, the parameter names of their checkpoints).

Shapes in comments: B batch, T new tokens, S cached + new tokens (keys), C n_embd, H query heads,
K key/value heads (H for GPT-2), D head size, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.nets.kv_cache import CacheStep, KVCache
from model.nets.record import NOTHING, Recorder

Part = Callable[[torch.Tensor], torch.Tensor]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, kv: CacheStep | None, rec: Recorder,
           dropout: float = 0.0) -> torch.Tensor:
    """The new tokens' queries (B, H, T, D), keys and values (B, K, T, D) -> each head's output side by side
    (B, T, H * D), looking back through the cache when there is one. Records (and lets hooks replace) the
    pattern and each head's output z."""
    B, H, T, D = q.shape
    K = k.shape[1]
    if kv is None:  # plain causal over the T new tokens
        mask, is_causal = None, True
    else:  # the new keys join the cached ones; kv says which keys each query sees
        k, v = kv.update(layer, k, v)  # (B, K, S, D)
        mask, is_causal = kv.mask, kv.is_causal

    if rec.wants(f"blocks.{layer}.attn.pattern"):
        # explicit softmax so the pattern can be recorded, one per query head: each key/value head is
        # repeated for the H // K query heads that share it
        if K != H:
            k, v = k.repeat_interleave(H // K, dim=1), v.repeat_interleave(H // K, dim=1)  # (B, H, S, D)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D)  # (B, H, T, S)
        if is_causal:
            mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        att = att.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        att = rec(f"blocks.{layer}.attn.pattern", att)
        y = F.dropout(att, dropout, training=dropout > 0) @ v
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout,
                                           enable_gqa=H != K)
    y = rec(f"blocks.{layer}.attn.z", y.transpose(1, 2))  # (B, T, H, D): each query head's output
    return y.reshape(B, T, H * D)


def residual(layer: int, x: torch.Tensor, attn: Part, mlp: Part, rec: Recorder,
             drop: Part = nn.Identity()) -> torch.Tensor:
    """One block on the residual stream x (B, T, C): attention, then the MLP, each reading the stream
    (through its own norm, inside attn and mlp) and adding what it writes back to it."""
    x = rec(f"blocks.{layer}.resid_pre", x)
    a = rec(f"blocks.{layer}.attn_out", drop(attn(x)))
    x = rec(f"blocks.{layer}.resid_mid", x + a)
    m = rec(f"blocks.{layer}.mlp_out", drop(mlp(x)))
    return rec(f"blocks.{layer}.resid_post", x + m)


class CausalLM(nn.Module):
    """A decoder-only transformer: token ids in, logits out, with a KV cache and hook points.

    A net subclasses it with its blocks (`blocks`), its final norm (`ln_f`), its token embedding (`wte`,
    whose weight also says the model's device and dtype), what enters the stream (`embed`), the lm head's
    weight and a description of itself (`architecture`). The rest of the engine (generation, batching,
    the probes, interventions) asks only for these.
    """

    config: Any  # the net's own config; every one has n_layer, n_head, n_kv_head, head_dim, n_embd, n_ctx, vocab_size
    head_product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # model/nets/speed.py may swap in a faster one
    blocks: nn.ModuleList  # each called as block(x, where, kv, rec)
    wte: nn.Embedding      # the token embedding
    ln_f: nn.Module        # the final norm, which the logit lens applies too

    def embed(self, idx: torch.Tensor, pos: torch.Tensor, rec: Recorder) -> tuple[torch.Tensor, Any]:
        """Token ids (B, T) at positions (B or 1, T) -> the stream entering block 0 (B, T, C), and what
        every block needs to place its tokens (rotary angles; None where positions were added here)."""
        raise NotImplementedError

    def head_weight(self) -> torch.Tensor:
        """The lm head's weight (V, C)."""
        raise NotImplementedError

    def architecture(self) -> dict:
        """What kind of transformer this is, for the pages: how positions enter, the norm, the MLP and
        its width, query and key/value heads, whether the lm head is the token embedding."""
        raise NotImplementedError

    @property
    def mlp_width(self) -> int:
        """Neurons in each block's MLP."""
        raise NotImplementedError

    def new_cache(self, batch_size: int, max_len: int | None = None, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for batch_size rows of up to max_len tokens (the context by default), on the
        model's device and in its dtype unless told otherwise."""
        c, w = self.config, self.wte.weight
        return KVCache.empty(c.n_layer, batch_size, c.n_kv_head, max_len or c.n_ctx, c.head_dim,
                             device=device or w.device, dtype=dtype or w.dtype)

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None, rec: Recorder = NOTHING) -> torch.Tensor:
        """Token ids (B, T) -> final normed hidden states (B, T, C)."""
        T = idx.shape[1]
        kv = None
        if cache is not None:
            kv = cache.step(T)  # where the new keys go and what each query sees, for every layer
            pos, length = kv.positions, kv.S  # (B or 1, T)
        else:
            pos = torch.arange(T, device=idx.device)[None]  # (1, T)
            length = T
        if length > self.config.n_ctx:
            raise ValueError(f"sequence of {length} tokens is longer than the context of {self.config.n_ctx}")
        x, where = self.embed(idx, pos, rec)
        for block in self.blocks:
            x = block(x, where, kv, rec)
        if kv is not None:
            kv.finish(T)
        return rec("ln_final", self.ln_f(x))

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., C) -> logits (..., V): the lm head."""
        return self.head_product(x, self.head_weight())

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, rec: Recorder | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V), or (B, 1, V) with last_only.

        Pass a Recorder to capture activations by name, or to replace them with its hooks
        (see model/nets/record.py); without one the forward records nothing and pays nothing.
        """
        rec = rec or NOTHING
        x = self.hidden(idx, cache, rec)
        if last_only:
            x = x[:, -1:]
        return rec("logits", self.unembed(x))
