"""Single-stream decoding with the KV cache: sample one token, append, repeat."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from model.nets.net import CausalLM
from model.decode.sampling import SamplingParams, Step, sample_step


@torch.inference_mode()
def generate(model: CausalLM, prompt: Sequence[int], params: SamplingParams, max_new_tokens: int,
             seed: int | None = None, n: int = 10) -> Iterator[Step]:
    """Yield one Step per new token. Stops at max_new_tokens or the end of the context.

    The caller decides about stop strings and end-of-text; closing the iterator
    stops the work at once.
    """
    if not prompt:
        raise ValueError("the prompt must hold at least one token")
    ctx = model.config.n_ctx
    max_new_tokens = min(max_new_tokens, ctx - len(prompt))
    if max_new_tokens <= 0:
        return
    device = model.wte.weight.device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    cache = model.new_cache(1, max_len=len(prompt) + max_new_tokens, device=device)
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        logits = model(ids, cache=cache, last_only=True)[0, -1]
        step = sample_step(logits, params, gen, n=n)
        yield step
        ids = torch.tensor([[step.id]], dtype=torch.long, device=device)
