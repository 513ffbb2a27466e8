"""GPT-2 in PyTorch, written to be read and looked inside.

The classes follow nanoGPT's model.py and keep GPT-2's parameter names
(wte, wpe, h.N.ln_1, attn.c_attn, ...), so a Hugging Face checkpoint loads by a
name map plus four transposes (see model/loading.py).

Shapes in comments: B batch, T new tokens, S cached + new tokens (keys),
C n_embd, H n_head, D head size (C // H), V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.record import Recorder


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

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of every layer, preallocated, with one length per row.

    Rows may hold sequences of different lengths (a batch of independent
    streams); the attention mask hides each row's unused tail.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.max_len = max_len or config.n_ctx
        shape = (config.n_layer, batch_size, config.n_head, self.max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def positions(self, T: int) -> torch.Tensor:
        """Absolute positions of T new tokens in each row: (B, T)."""
        return self.lengths[:, None] + torch.arange(T, device=self.lengths.device)

    def select(self, rows: list[int]) -> "KVCache":
        """A new cache holding only the given rows (in that order)."""
        out = KVCache.__new__(KVCache)
        out.max_len = self.max_len
        idx = torch.tensor(rows, dtype=torch.long, device=self.lengths.device)
        out.k = self.k.index_select(1, idx)
        out.v = self.v.index_select(1, idx)
        out.lengths = self.lengths.index_select(0, idx)
        return out

    def step(self, T: int) -> "CacheStep":
        """Where the next forward's T new tokens go, worked out once for all layers."""
        return CacheStep(self, T)


class CacheStep:
    """One forward's use of a KVCache: where each row's T new keys land, and what each query sees.

    Worked out once per forward rather than in every layer (one look at the lengths,
    one mask). When every row holds the same length, as for one stream, the new keys
    are one slice copy and often no mask is needed at all: a single new query may see
    every key in the cache, and a prompt fed to an empty cache is plain causal.
    """

    def __init__(self, cache: KVCache, T: int):
        self.cache = cache
        B, device = cache.batch_size, cache.lengths.device
        lengths = cache.lengths.tolist()
        self.S = max(lengths) + T  # keys the queries look at: the longest row's, cached + new
        if self.S > cache.max_len:
            raise ValueError(f"sequence of {self.S} tokens does not fit the cache of {cache.max_len}")
        new = torch.arange(T, device=device)
        # every row at one length (one stream, or rows that started together): the new keys are one slice
        self.start = lengths[0] if lengths.count(lengths[0]) == B else None
        self.mask: torch.Tensor | None = None  # True where a query may look; None: see is_causal
        self.is_causal = False
        if self.start is not None:
            self.positions = (self.start + new)[None]  # (1, T)
            if T > 1 and self.start == 0:
                self.is_causal = True
            elif T > 1:  # query at position p sees keys 0..p
                self.mask = torch.arange(self.S, device=device)[None, :] <= self.positions[0, :, None]  # (T, S)
        else:
            self.positions = cache.lengths[:, None] + new  # (B, T)
            self.rows = torch.arange(B, device=device)[:, None].expand(B, T).reshape(-1)
            self.mask = (torch.arange(self.S, device=device)[None, None, :] <= self.positions[:, :, None])[:, None]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys and values (B, H, T, D) of one layer; return all its keys and values (B, H, S, D)."""
        ck, cv = self.cache.k[layer], self.cache.v[layer]
        if self.start is not None:
            T = k.shape[2]
            ck[:, :, self.start:self.start + T] = k
            cv[:, :, self.start:self.start + T] = v
        else:  # each row at its own position: (B*T) scattered writes of (H, D)
            B, H, T, D = k.shape
            where = (self.rows, self.positions.reshape(-1))
            ck.transpose(1, 2).index_put_(where, k.transpose(1, 2).reshape(B * T, H, D).to(ck.dtype))
            cv.transpose(1, 2).index_put_(where, v.transpose(1, 2).reshape(B * T, H, D).to(cv.dtype))
        return ck[:, :, :self.S].to(k.dtype), cv[:, :, :self.S].to(v.dtype)

    def finish(self, T: int) -> None:
        self.cache.lengths += T


class WeightCopies:
    """Inference copies of one weight, laid out for speed: "t" stored (in, out), "packed" in
    oneDNN's layout. Each is made on first use and again whenever the weight changes; copies
    and pickles of a module leave them behind (see __getstate__ below), to be remade on use."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[tuple, torch.Tensor]] = {}

    def get(self, w: torch.Tensor, kind: str) -> torch.Tensor:
        key = (w.data_ptr(), w._version)
        held = self._held.get(kind)
        if held is None or held[0] != key:
            held = (key, w.detach().to_mkldnn() if kind == "packed" else w.detach().t().contiguous())
            self._held[kind] = held
        return held[1]


def onednn_usable(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether x @ w.T may go through oneDNN's packed weight: fp32 on a CPU, and not under
    autocast (whose bf16 products training expects, and which does not see oneDNN's)."""
    return (x.device.type == "cpu" and x.dtype == w.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available())


def onednn_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """x (..., in) times a packed weight (out, in), transposed: (..., out)."""
    rows = x.reshape(-1, x.shape[-1]).contiguous().to_mkldnn()
    return torch._C._nn.mkldnn_linear(rows, packed, None).to_dense().view(*x.shape[:-1], -1)


class Linear(nn.Linear):
    """nn.Linear that, without gradients, multiplies by copies of its fp32 weight laid out for a CPU.

    One row (a decoding step of one stream) uses a copy stored (in, out), as GPT-2's Conv1D
    keeps it: the row times the matrix then reads memory in order, 1.1-1.4x faster than
    nn.Linear's (out, in). Several rows (a batched step) of a large layer go through oneDNN
    with its packed copy: MKL's gemm reads a large matrix 2-3x slower for 4-40 rows on a
    2-core CPU (a 124M-shaped model's batched step: 96 ms for 4 rows, against 38 ms packed).
    Training uses the weight itself; each copy takes as much memory again.
    """

    PACKED_MIN = 1 << 19  # entries: smaller matrices stay in cache, where gemm wins

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self._copies = WeightCopies()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or self.weight.dtype != torch.float32:  # (16-bit: nn.Linear is faster)
            return super().forward(x)
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] > 1 and self.weight.numel() >= self.PACKED_MIN and onednn_usable(x, self.weight):
            return onednn_linear(x, self._copies.get(self.weight, "packed")) + self.bias
        return torch.addmm(self.bias, rows, self._copies.get(self.weight, "t")).view(*x.shape[:-1], -1)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_copies": WeightCopies()}


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, layer: int, kv: CacheStep | None,
                rec: Recorder | None) -> torch.Tensor:
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

        if rec is not None and rec.wants(f"blocks.{layer}.attn.pattern"):
            # explicit softmax so the pattern can be recorded
            att = (q @ k.transpose(-2, -1)) / math.sqrt(D)  # (B, H, T, S)
            if is_causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf"))
            att = att.softmax(dim=-1)
            rec.store(f"blocks.{layer}.attn.pattern", att)
            y = F.dropout(att, self.dropout, self.training) @ v
        else:
            drop = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor, layer: int, rec: Recorder | None) -> torch.Tensor:
        h = self.gelu(self.c_fc(x))  # (B, T, 4C)
        if rec is not None:
            rec.store(f"blocks.{layer}.mlp.post", h)
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

    def forward(self, x: torch.Tensor, kv: CacheStep | None = None, rec: Recorder | None = None) -> torch.Tensor:
        if rec is None:
            x = x + self.drop(self.attn(self.ln_1(x), self.layer, kv, None))
            x = x + self.drop(self.mlp(self.ln_2(x), self.layer, None))
            return x
        i = self.layer
        rec.store(f"blocks.{i}.resid_pre", x)
        a = self.drop(self.attn(self.ln_1(x), i, kv, rec))
        rec.store(f"blocks.{i}.attn_out", a)
        x = x + a
        rec.store(f"blocks.{i}.resid_mid", x)
        m = self.drop(self.mlp(self.ln_2(x), i, rec))
        rec.store(f"blocks.{i}.mlp_out", m)
        x = x + m
        rec.store(f"blocks.{i}.resid_post", x)
        return x


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
        self._head = WeightCopies()  # wte.weight laid out for inference (see unembed)
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

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None, rec: Recorder | None = None) -> torch.Tensor:
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
        if rec is not None:
            rec.store("embed", tok)
            rec.store("pos_embed", pe.expand_as(tok))
        x = self.drop(tok + pe)
        for block in self.h:
            x = block(x, kv, rec)
        if kv is not None:
            kv.finish(T)
        x = self.ln_f(x)
        if rec is not None:
            rec.store("ln_final", x)
        return x

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., C) -> logits (..., V): the lm head, tied to the token embedding.

        Training multiplies by wte.weight (V, C) itself, so gradients reach it. Without
        gradients the same weights are read from a copy laid out for speed: on a CPU with
        oneDNN, in oneDNN's packed layout (fp32 still); elsewhere transposed to (C, V), so one
        position's logits stream through memory in order. On a 2-core CPU this makes the lm
        head, most of a small model's weights, 1.1-3x faster for 1 to 64 rows than
        F.linear. The copy is made once, and made again whenever the weights change.
        """
        w = self.wte.weight
        if torch.is_grad_enabled():
            return F.linear(x, w)
        if w.device.type == "cpu" and w.dtype == torch.float32 and torch.backends.mkldnn.is_available():
            # 16-bit activations (autocast) multiply the weight itself, as autocast casts it
            return onednn_linear(x, self._head.get(w, "packed")) if onednn_usable(x, w) else F.linear(x, w)
        return x @ self._head.get(w, "t")

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_head": WeightCopies()}

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, rec: Recorder | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V), or (B, 1, V) with last_only.

        Pass a Recorder to capture activations by name (see model/record.py);
        without one the forward records nothing and pays nothing.
        """
        x = self.hidden(idx, cache, rec)
        if last_only:
            x = x[:, -1:]
        logits = self.unembed(x)
        if rec is not None:
            rec.store("logits", logits)
        return logits
