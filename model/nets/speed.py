"""A CPU speed layer for inference, applied at load time: `speed_up(model)`.

The maths stays in model/nets/gpt2.py and model/nets/llama.py; this module only changes how two
products are computed when no gradients are wanted, and changes no output
(tests/test_gpt2.py, tests/test_llama.py):

- the projections (GPT-2's c_attn, c_proj, c_fc; Llama's q/k/v/o, gate, up, down) multiply
  by copies of their fp32 weight laid out for a CPU. One row (a decoding step of one
  stream) uses a copy stored (in, out), which a row times the matrix reads in order;
  several rows of a large layer (a batched step) go through oneDNN with its packed copy,
  where MKL's gemm reads a large matrix 2-3x slower on a 2-core CPU;
- the lm head (logits against the token embedding, or an untied head) does the same
  with its weight.

Training and evaluation under autocast use the weights themselves: with gradients, or
under autocast, every product is the plain one. Each copy takes as much memory again,
and is remade whenever its weight changes.
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

M = TypeVar("M", bound=nn.Module)  # GPT or Llama: any model with a head_product


class WeightCopies:
    """Inference copies of one weight: "t" stored (in, out), "packed" in oneDNN's layout. Each is
    made on first use and again whenever the weight changes; copying or pickling the holder leaves
    them behind, to be remade on use."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[tuple, torch.Tensor]] = {}

    def get(self, w: torch.Tensor, kind: str) -> torch.Tensor:
        key = (w.data_ptr(), w._version)
        held = self._held.get(kind)
        if held is None or held[0] != key:
            held = (key, w.detach().to_mkldnn() if kind == "packed" else w.detach().t().contiguous())
            self._held[kind] = held
        return held[1]

    def __getstate__(self) -> dict:
        return {"_held": {}}


def onednn_usable(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether x @ w.T may go through oneDNN's packed weight: fp32 on a CPU, and not under
    autocast (whose bf16 products training expects, and which does not see oneDNN's)."""
    return (x.device.type == "cpu" and x.dtype == w.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available())


def onednn_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """x (..., in) times a packed weight (out, in), transposed: (..., out)."""
    rows = x.reshape(-1, x.shape[-1]).contiguous().to_mkldnn()
    return torch._C._nn.mkldnn_linear(rows, packed, None).to_dense().view(*x.shape[:-1], -1)


def plain(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Gradients, 16-bit weights (where nn.Linear is faster) or autocast: the plain product."""
    return torch.is_grad_enabled() or w.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type)


class FastLinear(nn.Linear):
    """nn.Linear whose inference products read the copies above."""

    PACKED_MIN = 1 << 19  # entries: smaller matrices stay in cache, where gemm wins

    _copies: WeightCopies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if plain(x, self.weight):
            return super().forward(x)
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] > 1 and self.weight.numel() >= self.PACKED_MIN and onednn_usable(x, self.weight):
            y = onednn_linear(x, self._copies.get(self.weight, "packed"))
            return y if self.bias is None else y + self.bias
        t = self._copies.get(self.weight, "t")
        y = rows @ t if self.bias is None else torch.addmm(self.bias, rows, t)  # Llama's projections have no bias
        return y.view(*x.shape[:-1], -1)


class FastHead:
    """The lm head's product x @ w.T, reading w from copies laid out for a CPU: 1.1-3x faster
    than F.linear for 1 to 64 rows of a small model on a 2-core CPU."""

    def __init__(self) -> None:
        self._copies = WeightCopies()

    def __call__(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
            return F.linear(x, w)
        if w.device.type == "cpu" and w.dtype == torch.float32 and torch.backends.mkldnn.is_available():
            return onednn_linear(x, self._copies.get(w, "packed")) if onednn_usable(x, w) else F.linear(x, w)
        return x @ self._copies.get(w, "t")  # (C, V): one position's logits stream through memory in order


def speed_up(model: M) -> M:
    """Swap in the fast products, in place; the parameters and every output stay the same."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FastLinear
            module._copies = WeightCopies()
    model.head_product = FastHead()
    return model
