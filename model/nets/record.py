"""What "recording activations" means: one naming scheme, capture by name.

Names follow TransformerLens' dotted style. For a model with L layers:

    embed                     token embeddings                     (B, T, C)
    pos_embed                 position embeddings (GPT-2 only)     (B, T, C)
    blocks.{i}.resid_pre      residual stream entering block i     (B, T, C)
    blocks.{i}.attn.pattern   attention weights after softmax      (B, H, T, S), H query heads
    blocks.{i}.attn.z         each query head's output, before the (B, T, H, D)
                              output projection mixes the heads
    blocks.{i}.attn_out       what attention adds to the stream    (B, T, C)
    blocks.{i}.resid_mid      stream between attention and MLP     (B, T, C)
    blocks.{i}.mlp.post       MLP hidden units after GELU          (B, T, 4C)
                              (Llama: silu(gate) * up, (B, T, I))
    blocks.{i}.mlp_out        what the MLP adds to the stream      (B, T, C)
    blocks.{i}.resid_post     stream leaving block i               (B, T, C)
    ln_final                  final layer norm output              (B, T, C) (Llama: RMSNorm)
    logits                    scores over the vocabulary           (B, T, V)

Every name is a hook point, as in TransformerLens: the nets write
``x = rec("blocks.3.attn.z", x)``, and what the recorder returns flows on. A Recorder
is given the names (or shell-style patterns such as ``blocks.*.attn.pattern``) to
keep, and optionally hooks: {name: function of the activation returning its
replacement}, which is how an intervention (model/probes/interventions.py) switches a head
off or patches in another run's residual stream. What is kept is the value after
its hook. NOTHING is the recorder of a forward that records nothing: it hands every
activation back untouched, so a plain forward pays one call per name and nothing more.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping

import torch

Hook = Callable[[torch.Tensor], torch.Tensor]

PER_BLOCK = ("resid_pre", "attn.pattern", "attn.z", "attn_out", "resid_mid", "mlp.post", "mlp_out", "resid_post")
GLOBAL = ("embed", "pos_embed", "ln_final", "logits")


def all_names(n_layer: int, pos_embed: bool = True) -> list[str]:
    """Every name a model with n_layer blocks can record, in forward order (rotary positions,
    pos_embed=False, have no position embedding to record)."""
    names = ["embed", "pos_embed"] if pos_embed else ["embed"]
    names += [f"blocks.{i}.{part}" for i in range(n_layer) for part in PER_BLOCK]
    return names + ["ln_final", "logits"]


class Recorder:
    """Collects the activations whose names match what was asked for."""

    def __init__(self, names: Iterable[str] = (), hooks: Mapping[str, Hook] | None = None):
        self.patterns = list(names)
        self._exact = {p for p in self.patterns if not any(c in p for c in "*?[")}
        self._globs = [p for p in self.patterns if p not in self._exact]
        self.hooks: dict[str, Hook] = dict(hooks or {})
        self.acts: dict[str, torch.Tensor] = {}

    def wants(self, name: str) -> bool:
        """Whether the forward must compute `name` explicitly: it is kept, or a hook acts on it."""
        return name in self.hooks or self.keeps(name)

    def keeps(self, name: str) -> bool:
        return name in self._exact or any(fnmatch.fnmatchcase(name, g) for g in self._globs)

    def __call__(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """The hook point `name`: the activation, replaced by its hook if it has one, and kept if asked for."""
        hook = self.hooks.get(name)
        if hook is not None:
            value = hook(value)
        if self.keeps(name):
            self.acts[name] = value.detach()
        return value

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.acts[name]

    def __contains__(self, name: str) -> bool:
        return name in self.acts


class _Nothing(Recorder):
    def __init__(self) -> None:
        super().__init__([])

    def wants(self, name: str) -> bool:
        return False

    def __call__(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value


NOTHING = _Nothing()
