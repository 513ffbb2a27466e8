"""Interventions: switch parts of the model off, or patch one run's activations into another.

Both are hooks on the recorder's hook points (model/nets/record.py), so the nets stay as
they read:

- a head (kind "head", index = the query head) at ``blocks.{b}.attn.z``, each head's output
  before the output projection mixes them; under grouped-query attention a query head is
  switched off alone, the heads sharing its keys and values untouched;
- an MLP neuron (kind "neuron", index = the hidden unit) at ``blocks.{b}.mlp.post``;
- a block's whole attention (kind "attn") at ``blocks.{b}.attn_out``, or its MLP ("mlp") at
  ``blocks.{b}.mlp_out``.

Mode "zero" writes 0; "mean" writes the activation's mean over the prompt's positions
(each sequence its own), which keeps its average contribution and removes what
varies from token to token.

Activation patching runs the corrupted prompt with the clean run's residual stream
written in at one (block, position): ``blocks.{b}.resid_pre``, the stream entering
block b. patch_grid does every cell in batched forwards, one row per cell; a Patch is one cell kept for
every forward of another run (the Inference stepper), applied by the same hooks as the ablations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from model.nets.net import CausalLM
from model.nets.record import Hook, Recorder

Kind = Literal["head", "neuron", "attn", "mlp"]
Mode = Literal["zero", "mean"]
KINDS: tuple[str, ...] = ("head", "neuron", "attn", "mlp")
MAX_INTERVENTIONS = 256  # per request: enough for every head of a 12-block model and more
PATCH_ROWS = 96  # cells of the patching grid run in one forward
MAX_PATCH_TOKENS = 64  # prompt length for the grid: blocks x tokens rows of tokens each


@dataclass(frozen=True)
class Intervention:
    kind: Kind
    block: int
    index: int | None = None  # the head or the neuron; None for a whole attn or mlp
    mode: Mode = "zero"

    @property
    def point(self) -> str:
        """The hook point it acts on."""
        part = {"head": "attn.z", "neuron": "mlp.post", "attn": "attn_out", "mlp": "mlp_out"}[self.kind]
        return f"blocks.{self.block}.{part}"


@dataclass(frozen=True, eq=False)  # eq=False: a tensor field has no single truth value to compare by
class Patch:
    """The clean run's residual stream entering `block` at `position`, to write into another run there."""
    block: int
    position: int
    value: torch.Tensor  # (C,)

    @property
    def point(self) -> str:
        return f"blocks.{self.block}.resid_pre"


def sizes(model: CausalLM) -> dict[str, int]:
    """How many blocks, query heads per block and MLP neurons per block the model has."""
    return {"blocks": model.config.n_layer, "heads": model.config.n_head, "neurons": model.mlp_width}


def problem(model: CausalLM, interventions: Sequence[Intervention]) -> str | None:
    """What is wrong with a set of interventions for this model, as a sentence; None when all is well."""
    if len(interventions) > MAX_INTERVENTIONS:
        return (f"{len(interventions):,} interventions were given; at most {MAX_INTERVENTIONS} are applied "
                "at once: switch fewer parts off")
    n = sizes(model)
    for i, iv in enumerate(interventions):
        where = f"Intervention {i} ({iv.kind} in block {iv.block})"
        if iv.kind not in KINDS:
            return f"Intervention {i} has kind {iv.kind!r}; choose head, neuron, attn or mlp"
        if not 0 <= iv.block < n["blocks"]:
            return (f"Intervention {i} names block {iv.block}; this model has {n['blocks']} blocks, "
                    f"so choose 0 to {n['blocks'] - 1}")
        if iv.kind in ("head", "neuron"):
            count = n["heads" if iv.kind == "head" else "neurons"]
            if iv.index is None:
                return f"{where} needs an index: which {iv.kind}, 0 to {count - 1}"
            if not 0 <= iv.index < count:
                return (f"{where} has index {iv.index}; this model has {count:,} {iv.kind}s per block, "
                        f"so choose 0 to {count - 1:,}")
        elif iv.index is not None:
            return f"{where} switches off the whole {iv.kind}, so it takes no index: leave index out"
    return None


def hooks(interventions: Iterable[Intervention | Patch]) -> dict[str, Hook]:
    """One hook per hook point, applying every intervention on it (patches and ablations never share a point)."""
    by_point: dict[str, list] = {}
    for iv in interventions:
        by_point.setdefault(iv.point, []).append(iv)
    return {point: _paste(ivs) if isinstance(ivs[0], Patch) else _ablate(ivs) for point, ivs in by_point.items()}


def _paste(patches: list[Patch]) -> Hook:
    positions = [p.position for p in patches]
    return _writer((slice(None), positions), torch.stack([p.value for p in patches]))


def _writer(index: tuple, values: torch.Tensor) -> Hook:
    """A hook writing `values` into its activation at `index`."""
    def hook(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()  # never write into a tensor the forward may still read
        x[index] = values.to(x.dtype)
        return x
    return hook


def _ablate(ivs: list[Intervention]) -> Hook:
    # a whole attn/mlp output (B, T, C) is one slot; heads (B, T, H, D) and neurons (B, T, N) index the
    # dimension after the positions
    whole = [iv for iv in ivs if iv.index is None]
    zero = sorted({iv.index for iv in ivs if iv.index is not None and iv.mode == "zero"})
    mean = sorted({iv.index for iv in ivs if iv.index is not None and iv.mode == "mean"} - set(zero))

    def hook(x: torch.Tensor) -> torch.Tensor:
        if whole:  # "zero" wins over "mean" if both were asked for
            if any(iv.mode == "zero" for iv in whole):
                return torch.zeros_like(x)
            return x.mean(dim=1, keepdim=True).expand_as(x).clone()
        x = x.clone()  # never write into a tensor the forward may still read
        if zero:
            x[:, :, zero] = 0
        if mean:
            x[:, :, mean] = x[:, :, mean].mean(dim=1, keepdim=True)
        return x

    return hook


def recorder(interventions: Sequence[Intervention | Patch], names: Iterable[str] = ()) -> Recorder | None:
    """A recorder keeping `names` with the interventions' hooks; None when there is nothing to do."""
    names = list(names)
    if not interventions and not names:
        return None
    return Recorder(names, hooks(interventions))


# ---- activation patching ----

def _patch_hooks(stream: dict[int, torch.Tensor], cells: Iterable[tuple[int, int, int]]) -> dict[str, Hook]:
    """Hooks that write the clean stream into batch row r at block b, position p, for each (r, b, p)."""
    by_block: dict[int, tuple[list[int], list[int]]] = {}
    for row, block, pos in cells:
        rows, positions = by_block.setdefault(block, ([], []))
        rows.append(row)
        positions.append(pos)

    def at(block: int) -> Hook:
        source = stream[block]  # (T, C)
        rows, positions = (torch.tensor(v, device=source.device) for v in by_block[block])
        return _writer((rows, positions), source[positions])

    return {f"blocks.{b}.resid_pre": at(b) for b in by_block}


@torch.inference_mode()
def clean_stream(model: CausalLM, ids: Sequence[int]) -> dict[int, torch.Tensor]:
    """The residual stream entering each block, {block: (T, C)}, of one run."""
    rec = Recorder(["blocks.*.resid_pre"])
    model.hidden(torch.tensor([list(ids)], device=model.wte.weight.device), rec=rec)
    return {b: rec[f"blocks.{b}.resid_pre"][0] for b in range(model.config.n_layer)}


@torch.inference_mode()
def stream_patch(model: CausalLM, clean: Sequence[int], block: int, position: int) -> Patch:
    """One cell of the patching grid as a Patch: the clean run's stream entering `block` at `position`."""
    name = f"blocks.{block}.resid_pre"
    rec = Recorder([name])
    model.hidden(torch.tensor([list(clean)], device=model.wte.weight.device), rec=rec)
    return Patch(block, position, rec[name][0, position].clone())


@torch.inference_mode()
def patched_logits(model: CausalLM, clean: Sequence[int], corrupted: Sequence[int],
                   cells: Iterable[tuple[int, int]]) -> torch.Tensor:
    """The corrupted run's logits (T, V) with the clean run's stream patched in at every (block, position)
    of `cells` together."""
    rec = Recorder([], _patch_hooks(clean_stream(model, clean), ((0, b, p) for b, p in cells)))
    return model(torch.tensor([list(corrupted)], device=model.wte.weight.device), rec=rec)[0].float()


@torch.inference_mode()
def patch_grid(model: CausalLM, clean: Sequence[int], corrupted: Sequence[int], right: int, wrong: int,
               rows_per_forward: int = PATCH_ROWS) -> dict:
    """The logit difference (right - wrong) at the corrupted prompt's last position, with the clean
    run's residual stream patched in at each (block, position): grid[block][position].

    Both prompts must have the same number of tokens. Every cell is one row of a batch, so
    the grid of L blocks by T positions costs L * T / rows_per_forward forwards, not L * T.
    `clean` and `corrupted` are the unpatched runs' logit differences; `normalised` maps each cell
    to (cell - corrupted) / (clean - corrupted): 1 where the patch restores the clean answer, 0 where
    it changes nothing.
    """
    if len(clean) != len(corrupted):
        raise ValueError("the clean and corrupted prompts must have the same number of tokens")
    device = model.wte.weight.device
    L, T = model.config.n_layer, len(clean)
    stream = clean_stream(model, clean)

    def diff(logits: torch.Tensor) -> torch.Tensor:  # (..., V) -> (...)
        return (logits[..., right] - logits[..., wrong]).float()

    ids = torch.tensor([list(clean), list(corrupted)], device=device)
    base = diff(model(ids, last_only=True)[:, -1])
    clean_diff, corrupted_diff = float(base[0]), float(base[1])
    cells = [(b, p) for b in range(L) for p in range(T)]
    values: list[float] = []
    for start in range(0, len(cells), rows_per_forward):
        chunk = cells[start:start + rows_per_forward]
        rec = Recorder([], _patch_hooks(stream, ((r, b, p) for r, (b, p) in enumerate(chunk))))
        x = torch.tensor([list(corrupted)], device=device).expand(len(chunk), T)
        values += diff(model(x, rec=rec, last_only=True)[:, -1]).tolist()
    grid = [values[b * T:(b + 1) * T] for b in range(L)]
    span = clean_diff - corrupted_diff
    normalised = [[(v - corrupted_diff) / span if span else 0.0 for v in row] for row in grid]
    return {"grid": grid, "normalised": normalised, "clean": clean_diff, "corrupted": corrupted_diff}
