"""The Llama architecture in PyTorch, written to be read and looked inside, as model/nets/gpt2.py is.

One file serves Llama 3.x, SmolLM2, Qwen2/2.5 and Mistral checkpoints in the Hugging
Face layout. What differs from GPT-2:

- positions are rotary: no position table; each query and key is turned by an angle that
  grows with its position, so attention scores depend on how far apart two tokens are;
- RMSNorm instead of LayerNorm: scale by the root mean square, no mean, no bias;
- the MLP is SwiGLU: down(silu(gate(x)) * up(x));
- grouped-query attention: n_head query heads share n_kv_head key/value heads (each
  key/value head serves n_head // n_kv_head query heads), so the KV cache is smaller;
- Qwen2 adds biases to q, k and v; the lm head may be tied to the token embedding or not.

Parameter names are the checkpoint's without its "model." prefix (embed_tokens,
layers.N.self_attn.q_proj, layers.N.mlp.gate_proj, norm, lm_head), so loading is a name
map (see model/formats/llama_checkpoint.py). Activations are recorded under the same names as GPT-2's
(model/nets/record.py); the attention pattern is recorded per query head.

Shapes in comments: B batch, T new tokens, S cached + new tokens (keys), C n_embd,
H query heads, K key/value heads, D head size, I the MLP's hidden size, V vocabulary.
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

MODEL_TYPES = ("llama", "mistral", "qwen2")  # config.json model_type values this file computes


@dataclass(frozen=True)
class Llama3Rope:
    """Llama 3.1's stretch of the rotary frequencies for long contexts (rope_scaling type "llama3"):
    slow rotations (long wavelengths) are slowed by `factor`, fast ones kept, those between blended."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_context: int  # original_max_position_embeddings: the context the model was first trained at


@dataclass(frozen=True)
class LlamaConfig:
    n_layer: int = 30
    n_head: int = 9                     # query heads
    n_kv_head: int = 3                  # key/value heads, shared by n_head // n_kv_head query heads each
    n_embd: int = 576
    n_ctx: int = 8192
    vocab_size: int = 49152
    n_inner: int = 1536                 # the SwiGLU MLP's hidden size (intermediate_size)
    head_dim: int = 64                  # usually n_embd // n_head, but a checkpoint may say otherwise
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0         # the base of the rotary frequencies
    rope_scaling: Llama3Rope | None = None
    qkv_bias: bool = False              # Qwen2: biases on q, k and v
    o_bias: bool = False                # Llama's attention_bias also puts one on o_proj
    mlp_bias: bool = False
    tie_word_embeddings: bool = True    # the lm head is the token embedding
    model_type: str = "llama"

    def __post_init__(self) -> None:
        if self.n_head % self.n_kv_head:
            raise ValueError(f"num_attention_heads ({self.n_head}) must be a multiple of "
                             f"num_key_value_heads ({self.n_kv_head})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even: rotary positions turn pairs of numbers")

    def to_dict(self) -> dict:
        return asdict(self)


def rope_frequencies(config: LlamaConfig) -> torch.Tensor:
    """The rotation speed (radians per position) of each pair of a head's D numbers: (D/2,), fp32."""
    D = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    s = config.rope_scaling
    if s is None:
        return inv_freq
    # Llama 3: wavelengths longer than the original context / low_freq_factor are slowed by factor,
    # shorter than original / high_freq_factor kept, and those between blended smoothly
    wavelen = 2 * math.pi / inv_freq
    low_wavelen, high_wavelen = s.original_context / s.low_freq_factor, s.original_context / s.high_freq_factor
    scaled = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * scaled / s.factor + smooth * scaled
    between = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(between, blended, scaled)


class Rotary(nn.Module):
    """cos and sin of every position's angles, for rotating queries and keys."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        # a plain attribute, not a buffer: model.to(bfloat16) must not round the frequencies
        self.inv_freq = rope_frequencies(config)  # (D/2,)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (B or 1, T) -> cos, sin (B or 1, T, D), computed in fp32 as the reference does."""
        angles = positions[..., None].float() * self.inv_freq.to(positions.device)  # (B or 1, T, D/2)
        angles = torch.cat((angles, angles), dim=-1)  # each angle turns the pair (i, i + D/2)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn each pair (x[i], x[i + D/2]) of every head (B, heads, T, D) by its angle."""
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + turned * sin[:, None]


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 whatever the weights' dtype (as the reference does)."""

    def __init__(self, n_embd: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_embd))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        H, K, D, C = config.n_head, config.n_kv_head, config.head_dim, config.n_embd
        self.q_proj = nn.Linear(C, H * D, bias=config.qkv_bias)
        self.k_proj = nn.Linear(C, K * D, bias=config.qkv_bias)
        self.v_proj = nn.Linear(C, K * D, bias=config.qkv_bias)
        self.o_proj = nn.Linear(H * D, C, bias=config.o_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int,
                kv: CacheStep | None, rec: Recorder) -> torch.Tensor:
        """The stream's normed x (B, T, C) -> what attention writes back (B, T, C)."""
        B, T, _ = x.shape
        H, K, D = self.n_head, self.n_kv_head, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # positions enter here, and only here
        return self.o_proj(attend(q, k, v, layer, kv, rec))


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.n_inner, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.n_embd, config.n_inner, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.n_inner, config.n_embd, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor, layer: int, rec: Recorder) -> torch.Tensor:
        h = F.silu(self.gate_proj(x)) * self.up_proj(x)  # (B, T, I): the gate decides how much of up passes
        h = rec(f"blocks.{layer}.mlp.post", h)
        return self.down_proj(h)


class Block(nn.Module):
    def __init__(self, config: LlamaConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.input_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, where: tuple[torch.Tensor, torch.Tensor], kv: CacheStep | None = None,
                rec: Recorder = NOTHING) -> torch.Tensor:
        """The residual stream x (B, T, C) in, with what attention and then the MLP add to it; `where` is the
        rotary cos and sin of the tokens' positions, which turn queries and keys inside attention."""
        i, (cos, sin) = self.layer, where
        return residual(i, x, lambda h: self.self_attn(self.input_layernorm(h), cos, sin, i, kv, rec),
                        lambda h: self.mlp(self.post_attention_layernorm(h), i, rec), rec)


class Llama(CausalLM):
    def __init__(self, config: LlamaConfig, init: bool = True):
        """init=False leaves torch's default initialisation (for weights about to be loaded)."""
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.rotary = Rotary(config)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # the lm head's product (x, weight) -> logits; model/nets/speed.py may swap in a faster one
        self.head_product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.linear
        if init:
            self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # what the rest of the engine reaches for on any model, under GPT-2's names: the token
    # embedding (whose weight says the model's device and dtype) and the final norm (the logit lens)
    @property
    def wte(self) -> nn.Embedding:
        return self.embed_tokens

    @property
    def ln_f(self) -> RMSNorm:
        return self.norm

    def head_weight(self) -> torch.Tensor:
        """The lm head's weight (V, C): its own, or the token embedding's when the two are tied."""
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def num_parameters(self) -> dict[str, int]:
        """Parameter count by part. Rotary positions have no parameters; a tied lm head is the
        token embedding, counted once; an untied one is its own part."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        parts = {
            "token_embedding": self.embed_tokens.weight.numel(),
            "position_embedding": 0,
            "attention": sum(count(b.self_attn) for b in self.layers),
            "mlp": sum(count(b.mlp) for b in self.layers),
            "layer_norm": sum(count(b.input_layernorm) + count(b.post_attention_layernorm) for b in self.layers)
            + count(self.norm),
        }
        if self.lm_head is not None:
            parts["lm_head"] = self.lm_head.weight.numel()
        parts["total"] = sum(parts.values())
        return parts

    @property
    def blocks(self) -> nn.ModuleList:
        return self.layers

    @property
    def mlp_width(self) -> int:
        return self.config.n_inner

    def embed(self, idx: torch.Tensor, pos: torch.Tensor,
              rec: Recorder) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Token ids (B, T) at positions (B or 1, T) -> the token embeddings (B, T, C), with no position added
        to the stream, and the rotary cos and sin (B or 1, T, D) that every block's attention uses."""
        x = rec("embed", self.embed_tokens(idx))
        return x, self.rotary(pos, x.dtype)

    def architecture(self) -> dict:
        c = self.config
        return {"model_type": c.model_type, "positions": "rotary", "norm": "rmsnorm", "mlp": "swiglu",
                "n_kv_head": c.n_kv_head, "head_dim": c.head_dim, "n_inner": self.mlp_width,
                "tied_head": self.lm_head is None, "final_norm": sum(p.numel() for p in self.norm.parameters())}
