"""The KV cache: each layer's keys and values kept between forwards, so decoding a token
attends to the past without recomputing it.

Shapes: L layers, B rows, H key/value heads (fewer than the query heads under grouped-query
attention), M the cache's length, D head size, T new tokens, S keys a forward looks at
(cached + new).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer, preallocated, with one length per row.

    Rows may hold sequences of different lengths (a batch of independent
    streams); the attention mask hides each row's unused tail.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor):
        self.k, self.v, self.lengths = k, v, lengths  # (L, B, H, M, D) twice, (B,)

    @classmethod
    def empty(cls, n_layer: int, batch_size: int, n_kv_head: int, max_len: int, head_dim: int,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> KVCache:
        """Zeros for every layer's keys and values; a model makes its own with CausalLM.new_cache."""
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype),
                   torch.zeros(batch_size, dtype=torch.long, device=device))

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def view(self, start: int, stop: int) -> KVCache:
        """Rows start:stop, sharing this cache's memory: writes through the view land here."""
        return KVCache(self.k[:, start:stop], self.v[:, start:stop], self.lengths[start:stop])

    def step(self, T: int) -> CacheStep:
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
