"""From logits to a chosen token: temperature -> top-k -> top-p -> greedy or a seeded draw.

Each warper is a small function over the last dimension, so the same chain
serves one stream (V,) and a batch (B, V). `sample_step` also returns the
distribution before and after the warpers, so a page can show why a token won.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0            # 0 means no top-k cut
    top_p: float = 1.0        # 1 means no nucleus cut

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number ≥ 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0 (0 turns it off), got {self.top_k}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by T: below 1 sharpens, above 1 flattens. T = 0 is handled as greedy by the caller."""
    if temperature in (0, 1):
        return logits
    t = max(temperature, torch.finfo(logits.dtype).tiny)  # a T that rounds to 0 would give 0/0
    scaled = logits / t
    overflowed = ~torch.isfinite(scaled.amax(dim=-1, keepdim=True))
    if overflowed.any():
        # a tiny T overflowed the top logits to ±inf, where softmax gives nan: move the top
        # logit to 0 first (softmax is unchanged), then only the others can overflow, to -inf.
        # Row by row, so in a batch no row's result depends on another's.
        shifted = (logits - logits.amax(dim=-1, keepdim=True)) / t
        scaled = torch.where(overflowed, shifted, scaled)
    return scaled


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits (ties at the k-th value are kept too)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (ties at the edge are kept too)."""
    if p >= 1:
        return logits
    probs = logits.softmax(dim=-1)
    V = logits.shape[-1]
    # the nucleus is usually small: sort only the top k, widened until it holds mass p
    # (a full sort of 50k logits costs milliseconds per token)
    k = min(256, V)
    while True:
        top_logits, order = torch.topk(logits, k, dim=-1)  # sorted, highest first
        top = probs.gather(-1, order)
        cum = top.cumsum(dim=-1)
        if k == V or bool((cum[..., -1] >= p).all()):
            break
        k = min(4 * k, V)
    # a token stays when the tokens before it fall short of p; the top token always stays
    # (a p below float32's resolution would keep none: clamp to the top token)
    n_keep = ((cum - top) < p).sum(dim=-1, keepdim=True).clamp_(min=1)
    edge = top_logits.gather(-1, n_keep - 1)
    return logits.masked_fill(logits < edge, float("-inf"))


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The full chain; at temperature 0 only the argmax survives."""
    logits = logits.float()
    if params.greedy:
        top = logits.argmax(dim=-1, keepdim=True)
        return torch.full_like(logits, float("-inf")).scatter(-1, top, 0.0)
    logits = apply_temperature(logits, params.temperature)
    logits = apply_top_k(logits, params.top_k)
    return apply_top_p(logits, params.top_p)


@dataclass
class Ranked:
    id: int
    prob: float
    logit: float


@dataclass
class Step:
    id: int                # the chosen token
    prob: float            # its probability after the warpers (what the dice used)
    raw_prob: float        # its probability under the model's own distribution
    before: list[Ranked]  # top-N of the model's distribution (logits as the model gave them)
    after: list[Ranked]   # top-N after temperature / top-k / top-p (warped logits)
    entropy: float         # of the model's own distribution, in nats
    support: int           # how many tokens the warpers left possible


def entropy(logits: torch.Tensor) -> float:
    logp = logits.float().log_softmax(dim=-1)
    return float(-(logp.exp() * logp).nan_to_num().sum())


def sample_step(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None,
                n: int = 10, forced: int | None = None) -> Step:
    """One decision from a single position's logits (V,). `forced` takes that token instead of sampling."""
    return sample_steps(logits[None], [params], [generator], [n], forced=[forced])[0]


def sample_steps(logits: torch.Tensor, params: Sequence[SamplingParams],
                 generators: Sequence[torch.Generator | None], ns: Sequence[int],
                 forced: Sequence[int | None] | None = None) -> list[Step]:
    """sample_step for every row of logits (B, V), computed together (one stream is B = 1).

    Row i gets what it would get alone: every operation that decides a token works
    row by row (softmax, topk, cumsum over the last dimension), rows that share settings
    are warped together, and each row draws from its own generator, so no row's token
    depends on which other rows share the batch.

    Cheap over a 50k vocabulary: one search for the largest logits (see `largest`)
    serves the greedy choice and both top-n lists (the warpers keep the order of the
    logits, so the top tokens after them are the top tokens before, minus those they
    removed); the entropy comes from one product with the probabilities; nothing is sorted.
    """
    logits = logits.float()
    B = logits.shape[0]
    forced = list(forced) if forced is not None else [None] * B
    raw = logits.softmax(dim=-1)
    top_ids, top_logits = _top_tokens(logits, ns)
    entropies = _entropies(logits, raw, top_ids)

    decisions: list[_Decision] = [None] * B  # type: ignore[list-item]
    groups: dict[SamplingParams, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault(p, []).append(i)
    for p, rows in groups.items():
        if p.greedy:
            for i in rows:
                decisions[i] = _greedy(logits[i], top_ids[i], top_logits[i], ns[i], forced[i])
        else:
            for i, d in zip(rows, _sampled(logits, raw, p, rows, top_ids, ns, generators, forced)):
                decisions[i] = d

    ids = [d.id for d in decisions]
    raw_probs = raw.gather(-1, torch.tensor(ids, device=logits.device)[:, None])[:, 0].tolist()
    raw_top = _gather_top(raw, top_ids, max(ns)).tolist()
    return [Step(id=d.id, prob=d.prob, raw_prob=raw_probs[i],
                 before=[Ranked(t, q, z) for t, q, z in zip(top_ids[i][:ns[i]], raw_top[i], top_logits[i])
                         if q > 0],
                 after=d.after, entropy=entropies[i], support=d.support) for i, d in enumerate(decisions)]


@dataclass
class _Decision:
    id: int
    prob: float              # after the warpers
    after: list[Ranked]
    support: int


def _top_tokens(logits: torch.Tensor, ns: Sequence[int]) -> tuple[list[list[int]], list[list[float]]]:
    """Each row's largest logits, sorted: rows grouped by n, so a row's list never depends on the others'."""
    B, V = logits.shape
    top_ids: list[list[int]] = [[] for _ in range(B)]
    top_logits: list[list[float]] = [[] for _ in range(B)]
    by_n: dict[int, list[int]] = {}
    for i, n in enumerate(ns):
        by_n.setdefault(max(n, 2), []).append(i)  # at least 2: the greedy choice checks for a tie
    for k, rows in by_n.items():
        sub = logits if len(rows) == B else logits.index_select(0, torch.tensor(rows, device=logits.device))
        values, ids = largest(sub, min(k, V))
        for i, ri, rv in zip(rows, ids.tolist(), values.tolist()):
            top_ids[i], top_logits[i] = ri, rv
    return top_ids, top_logits


def _entropies(logits: torch.Tensor, raw: torch.Tensor, top_ids: list[list[int]]) -> list[float]:
    """-sum p ln p = -ln p_top + sum p (z_top - z), z_top the largest logit: both terms ≥ 0, so
    nothing cancels even when one token takes nearly all the mass."""
    top1 = torch.tensor([r[0] for r in top_ids], device=logits.device)[:, None]
    below_top = logits.gather(-1, top1) - logits  # (B, V), ≥ 0
    entropies = (torch.linalg.vecdot(raw, below_top) - raw.gather(-1, top1)[:, 0].log()).tolist()
    # a -inf logit makes 0 * -inf: the long way round for that row
    return [h if math.isfinite(h) else entropy(logits[i]) for i, h in enumerate(entropies)]


def _gather_top(x: torch.Tensor, top_ids: Sequence[Sequence[int]], n: int) -> torch.Tensor:
    """x at each row's first n top ids (G, n); rows with fewer repeat their first."""
    idx = [(list(r) + list(r[:1]) * n)[:n] for r in top_ids]
    return x.gather(-1, torch.tensor(idx, device=x.device, dtype=torch.long).view(len(idx), n))


def _greedy(logits: torch.Tensor, top_ids: list[int], top_logits: list[float], n: int,
            forced: int | None) -> _Decision:
    """warp() would leave only the argmax, at logit 0 and probability 1."""
    tie = len(top_logits) > 1 and top_logits[0] == top_logits[1]
    best = int(logits.argmax()) if tie else top_ids[0]  # on a tie, argmax's own choice
    chosen = best if forced is None else forced
    return _Decision(chosen, float(chosen == best), [Ranked(best, 1.0, 0.0)] if n > 0 else [], 1)


def _sampled(logits: torch.Tensor, raw: torch.Tensor, params: SamplingParams, rows: list[int],
             top_ids: list[list[int]], ns: Sequence[int], generators: Sequence[torch.Generator | None],
             forced: Sequence[int | None]) -> list[_Decision]:
    """The rows that share these settings: warp them together, draw each from its own generator."""
    B, V = logits.shape
    index = torch.tensor(rows, device=logits.device)
    sub = logits if len(rows) == B else logits.index_select(0, index)  # (G, V)
    warped = warp(sub, params)
    if warped is sub:  # temperature 1, no cuts: the distribution is the model's own
        after = raw if len(rows) == B else raw.index_select(0, index)
    else:
        after = warped.softmax(dim=-1)
    if all(forced[i] is not None for i in rows):
        ids = [forced[i] for i in rows]
    else:
        drawn = draw(after, [generators[i] for i in rows])
        ids = [t if forced[i] is None else forced[i] for i, t in zip(rows, drawn)]
    probs = after.gather(-1, torch.tensor(ids, device=logits.device)[:, None])[:, 0].tolist()
    # support: every token left finite; a finite row sum says all V are (the common case)
    finite = torch.isfinite(warped.sum(dim=-1)).tolist()
    counts = None if all(finite) else torch.isfinite(warped).sum(dim=-1).tolist()
    # after: the top tokens of the model that the warpers kept, with their warped logits
    n_max = max(ns[i] for i in rows)
    tops = [top_ids[i] for i in rows]
    cand_p, cand_z = _gather_top(after, tops, n_max).tolist(), _gather_top(warped, tops, n_max).tolist()
    return [_Decision(ids[j], probs[j],
                      [Ranked(t, q, z) for t, q, z in zip(top_ids[i][:ns[i]], cand_p[j], cand_z[j]) if q > 0],
                      V if finite[j] else counts[j]) for j, i in enumerate(rows)]


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator | None]) -> list[int]:
    """One token id per row of probabilities (G, V), each row from its own generator.

    Inverts the cumulative distribution at one uniform number per row: one number from
    the generator (multinomial uses one per vocabulary entry, and is slower).
    """
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:].contiguous()
    u = torch.cat([torch.rand((1,), generator=g, device=cdf.device, dtype=cdf.dtype) for g in generators])
    u = u[:, None] * total
    # the first token whose cumulative mass passes u (right=True skips tokens of probability 0);
    # if rounding put u at the very top, the last token that has any probability
    last = torch.searchsorted(cdf, total)
    return torch.minimum(torch.searchsorted(cdf, u, right=True), last)[:, 0].tolist()


def warp_probs(probs: Sequence[float], params: SamplingParams) -> list[float]:
    """The chain applied to a few candidates' probabilities (all a model server sends): their chances after it."""
    logits = torch.tensor([math.log(max(p, 1e-45)) for p in probs])
    return torch.softmax(warp(logits, params), dim=-1).tolist()


def draw_one(probs: Sequence[float], seed: int) -> int:
    """The index one seeded draw picks from a short list of probabilities."""
    return draw(torch.tensor([list(probs)]), [torch.Generator().manual_seed(seed)])[0]


def largest(x: torch.Tensor, k: int, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(x, k, dim=-1) over rows (G, V), sorted, for a small k and a large V: about 4x faster.

    A row's k largest values lie in the k blocks (of `block` entries) whose maxima are largest,
    so only those blocks, and the short tail after the last whole block, are searched.
    (Equal values may be listed in another order than torch.topk lists them.)
    """
    G, V = x.shape
    n_blocks = V // block
    if n_blocks < 4 * k:
        return torch.topk(x, k, dim=-1)
    maxima = x[:, :n_blocks * block].reshape(G, n_blocks, block).amax(dim=-1)  # (G, n_blocks)
    blocks = maxima.topk(k, dim=-1).indices
    cols = (blocks[:, :, None] * block + torch.arange(block, device=x.device)).reshape(G, k * block)
    if V > n_blocks * block:
        cols = torch.cat([cols, torch.arange(n_blocks * block, V, device=x.device).expand(G, -1)], dim=1)
    values, where = x.gather(-1, cols).topk(k, dim=-1)
    return values, cols.gather(-1, where)


class Utf8Stream:
    """Turns token bytes into text without ever emitting half a character.

    Bytes that end mid-character are held back until the rest arrives; bytes
    that can never form a character become U+FFFD, as in the final decode.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
