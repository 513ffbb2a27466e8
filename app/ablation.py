"""The set of switched-off parts as a page carries it in its URL: `off=h1.2,n0.42:mean,a3,m0`.

One item per part: `h{block}.{head}` a head, `n{block}.{neuron}` an MLP neuron, `a{block}` a block's
whole attention, `m{block}` its whole MLP; `:mean` writes the mean over the prompt's positions
instead of zero. The engine checks the numbers against the loaded model (app/engine.py).
"""

from __future__ import annotations

import re

from app import schemas as s

ITEM = re.compile(r"([hnam])(\d{1,4})(?:\.(\d{1,7}))?(:mean)?")
KIND = {"h": "head", "n": "neuron", "a": "attn", "m": "mlp"}
LETTER = {v: k for k, v in KIND.items()}
MAX_TEXT = 4000  # characters of an off field


def parse_off(text: str) -> list[s.InterventionIn] | None:
    """The parts an off field names, in its order, each once; None when the field is not such a list."""
    text = text.strip()
    if not text:
        return []
    if len(text) > MAX_TEXT:
        return None
    out: list[s.InterventionIn] = []
    for item in text.split(","):
        m = ITEM.fullmatch(item.strip())
        if not m:
            return None
        letter, block, index, mean = m.groups()
        if (index is None) != (letter in "am"):  # heads and neurons need an index, attn and mlp take none
            return None
        iv = s.InterventionIn(kind=KIND[letter], block=int(block), index=None if index is None else int(index),
                              mode="mean" if mean else "zero")
        if all(key(o) != key(iv) for o in out):
            out.append(iv)
    return out


def key(iv: s.InterventionIn) -> str:
    """The item naming a part, without its mode."""
    return f"{LETTER[iv.kind]}{iv.block}" + ("" if iv.index is None else f".{iv.index}")


def format_off(ivs: list[s.InterventionIn]) -> str:
    return ",".join(key(iv) + (":mean" if iv.mode == "mean" else "") for iv in ivs)


def toggle(ivs: list[s.InterventionIn], item: str, mode: str) -> list[s.InterventionIn]:
    """The set with the part `item` names switched off (in `mode`), or back on if it was off."""
    parsed = parse_off(item)
    if not parsed or len(parsed) != 1:
        return ivs
    part = parsed[0]
    if any(key(o) == key(part) for o in ivs):
        return [o for o in ivs if key(o) != key(part)]
    return [*ivs, part.model_copy(update={"mode": "mean" if mode == "mean" else "zero"})]


def describe(iv: s.InterventionIn) -> str:
    what = {"head": f"head {iv.index}", "neuron": f"neuron {iv.index}", "attn": "attention", "mlp": "MLP"}[iv.kind]
    return f"block {iv.block} {what}" + (" (mean)" if iv.mode == "mean" else "")
