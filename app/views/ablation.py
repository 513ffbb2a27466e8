"""The set of switched-off parts as a page carries it in its URL: `off=h1.2,n0.42:mean,a3,m0`.

One item per part: `h{block}.{head}` a head, `n{block}.{neuron}` an MLP neuron, `a{block}` a block's
whole attention, `m{block}` its whole MLP; `:mean` writes the mean over the prompt's positions
instead of zero. The engine checks the numbers against the loaded model (app/serving/engine.py).

The Internals page's view of a set (app/pages/ablate.py renders it): the next-token bars and the logit lens,
unchanged and with the set switched off, side by side; every number is Engine.next_token's and
Engine.activations', the numbers /api/next-token and /api/activations give with `interventions`.
"""

from __future__ import annotations

import re

from app.schemas import answers as an, requests as rq
from app.serving.engine import Engine
from app.problems import InputError
from app.problems import sentence
from app.templating import or_message

ITEM = re.compile(r"([hnam])(\d{1,4})(?:\.(\d{1,7}))?(:mean)?")
KIND = {"h": "head", "n": "neuron", "a": "attn", "m": "mlp"}
LETTER = {v: k for k, v in KIND.items()}
MAX_TEXT = 4000  # characters of an off field


def parse_off(text: str) -> list[rq.InterventionIn] | None:
    """The parts an off field names, in its order, each once; None when the field is not such a list."""
    text = text.strip()
    if not text:
        return []
    if len(text) > MAX_TEXT:
        return None
    out: list[rq.InterventionIn] = []
    for item in text.split(","):
        m = ITEM.fullmatch(item.strip())
        if not m:
            return None
        letter, block, index, mean = m.groups()
        if (index is None) != (letter in "am"):  # heads and neurons need an index, attn and mlp take none
            return None
        iv = rq.InterventionIn(kind=KIND[letter], block=int(block), index=None if index is None else int(index),
                              mode="mean" if mean else "zero")
        if all(key(o) != key(iv) for o in out):
            out.append(iv)
    return out


def key(iv: rq.InterventionIn) -> str:
    """The item naming a part, without its mode."""
    return f"{LETTER[iv.kind]}{iv.block}" + ("" if iv.index is None else f".{iv.index}")


def format_off(ivs: list[rq.InterventionIn]) -> str:
    return ",".join(key(iv) + (":mean" if iv.mode == "mean" else "") for iv in ivs)


def toggle(ivs: list[rq.InterventionIn], item: str, mode: str) -> list[rq.InterventionIn]:
    """The set with the part `item` names switched off (in `mode`), or back on if it was off."""
    parsed = parse_off(item)
    if not parsed or len(parsed) != 1:
        return ivs
    part = parsed[0]
    if any(key(o) == key(part) for o in ivs):
        return [o for o in ivs if key(o) != key(part)]
    return [*ivs, part.model_copy(update={"mode": "mean" if mode == "mean" else "zero"})]


def describe(iv: rq.InterventionIn) -> str:
    what = {"head": f"head {iv.index}", "neuron": f"neuron {iv.index}", "attn": "attention", "mlp": "MLP"}[iv.kind]
    return f"block {iv.block} {what}" + (" (mean)" if iv.mode == "mean" else "")


# ---------------------------------------------------------------- the Internals page's view

BARS = 8  # the model's most likely tokens shown, and any the switched-off model puts in its own top BARS


def grid(info: an.ModelInfo, ivs: list[rq.InterventionIn]) -> list[dict]:
    """One row per block: its heads and its attention and MLP as parts to switch, each marked when off."""
    off = {key(iv) for iv in ivs}
    rows = []
    for b in range(info.n_layer):
        heads = [{"item": f"h{b}.{h}", "label": str(h), "off": f"h{b}.{h}" in off} for h in range(info.n_head)]
        rows.append({"block": b, "heads": heads,
                     "attn": {"item": f"a{b}", "off": f"a{b}" in off}, "mlp": {"item": f"m{b}", "off": f"m{b}" in off}})
    return rows


def bar_rows(plain: an.NextTokenResponse, off: an.NextTokenResponse, extra: an.NextTokenResponse | None) -> list[dict]:
    """The tokens either model ranks in its top BARS, with both probabilities and the change."""
    now = {c.id: c.prob for c in off.before} | {t.id: t.prob for t in off.targets}
    before = {c.id: (c.text, c.prob) for c in plain.before}
    before |= {t.id: (t.text, t.prob) for t in (extra.targets if extra else [])}
    ids = [c.id for c in plain.before] + [c.id for c in off.before]
    top = max([p for _, p in before.values()] + list(now.values()) + [1e-9])
    rows = []
    for i in dict.fromkeys(ids):
        text, was = before[i]
        is_ = now.get(i, 0.0)
        rows.append({"id": i, "text": text, "was": was, "now": is_, "change": is_ - was,
                     "was_w": round(100 * was / top, 1), "now_w": round(100 * is_ / top, 1)})
    return rows


def lens_rows(plain: an.ActivationsResponse, off: an.ActivationsResponse, then: list[float]) -> list[dict]:
    """The logit lens at the last position: each state's top guess, unchanged and with the set off, and the change
    of the unchanged guess's probability (`then`: its probability in each state with the set off)."""
    rows = []
    for a, b, p in zip(plain.logit_lens or [], off.logit_lens or [], then):
        was, now = a.top[-1][0], b.top[-1][0]
        rows.append({"label": a.label, "was": was, "now": now, "changed": was.id != now.id, "change": p - was.prob})
    return rows


async def ablate_context(engine: Engine, prompt: str, ivs: list[rq.InterventionIn]) -> dict:
    """Everything the partial shows for the prompt with the set switched off. Raises InputError as the engine does."""
    plain = await engine.next_token(rq.NextTokenRequest(text=prompt, n=BARS))
    last = [plain.prompt_tokens - 1]
    lens = rq.ActivationsRequest(text=prompt, positions=last, residual_norms=False, logit_lens=1)
    plain_lens = await engine.activations(lens)
    if not ivs:
        return {"rows": bar_rows(plain, plain, None),
                "lens": lens_rows(plain_lens, plain_lens, [a.top[-1][0].prob for a in plain_lens.logit_lens or []]),
                "last": plain_lens.tokens[-1].text}
    off = await engine.next_token(rq.NextTokenRequest(text=prompt, n=BARS, targets=[c.id for c in plain.before],
                                                     interventions=ivs))
    risen = [c.id for c in off.before if c.id not in {p.id for p in plain.before}]
    extra = await engine.next_token(rq.NextTokenRequest(text=prompt, n=1, targets=risen)) if risen else None
    off_lens = await engine.activations(lens.model_copy(update={"interventions": ivs}))
    then = await engine.lens_probs([t.id for t in plain_lens.tokens],
                                   [a.top[-1][0].id for a in plain_lens.logit_lens or []], ivs)
    return {"rows": bar_rows(plain, off, extra), "lens": lens_rows(plain_lens, off_lens, then),
            "last": plain_lens.tokens[-1].text}


async def ablate_view(engine: Engine, prompt: str, off: str, clicked: str = "", mode: str = "zero",
                      layer: str = "", head: str = "") -> dict:
    """The partial's context: the set (after toggling the part clicked), the grid and the comparison, or a
    message."""
    info = engine.info()
    ivs = parse_off(off)
    notice = None
    if ivs is None:
        ivs, notice = [], "The set of switched-off parts in this link could not be read: everything is on."
    if clicked == "clear":
        ivs = []
    elif clicked == "shown-head":  # the head the attention view shows: the form's layer and head
        ivs = toggle(ivs, f"h{layer}.{head}", mode)
    elif clicked:
        ivs = toggle(ivs, clicked, mode)
    try:
        engine.interventions(ivs)
    except InputError as e:  # a hand-edited link naming a part this model lacks
        ivs, notice = [], f"{sentence(str(e))} Everything is on again."
    view = {"off": format_off(ivs), "items": [{"item": key(iv), "label": describe(iv)} for iv in ivs],
            "grid": grid(info, ivs), "mode": "mean" if mode == "mean" else "zero", "notice": notice, "prompt": prompt}
    if not prompt:
        return {**view, "error": "Type a prompt above to switch parts of the model off.", "kind": "info"}
    return {**view, **await or_message(ablate_context(engine, prompt, ivs))}
