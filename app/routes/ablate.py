"""Switching parts off on the Internals page: the next-token bars and the logit lens, unchanged and with the set
switched off, side by side (templates/partials/_ablate.html).

The set lives in the form's `off` field and in the URL (app/ablation.py spells it). A click on a head, a neuron or
a block's attention or MLP posts the form with `toggle` naming that part; the partial comes back with the new set,
and its data-url-param puts it in the address bar. Every number comes from Engine.next_token and
Engine.activations, the numbers /api/next-token and /api/activations give with `interventions`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from app import ablation
from app import schemas as s
from app.deps import EngineDep
from app.engine import Engine, InputError
from app.errors import sentence
from app.templating import or_message, partial

router = APIRouter(include_in_schema=False)

BARS = 8  # the model's most likely tokens shown, and any the switched-off model puts in its own top BARS


def grid(info: s.ModelInfo, ivs: list[s.InterventionIn]) -> list[dict]:
    """One row per block: its heads and its attention and MLP as parts to switch, each marked when off."""
    off = {ablation.key(iv) for iv in ivs}
    rows = []
    for b in range(info.n_layer):
        heads = [{"item": f"h{b}.{h}", "label": str(h), "off": f"h{b}.{h}" in off} for h in range(info.n_head)]
        rows.append({"block": b, "heads": heads,
                     "attn": {"item": f"a{b}", "off": f"a{b}" in off}, "mlp": {"item": f"m{b}", "off": f"m{b}" in off}})
    return rows


def bar_rows(plain: s.NextTokenResponse, off: s.NextTokenResponse, extra: s.NextTokenResponse | None) -> list[dict]:
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


def lens_rows(plain: s.ActivationsResponse, off: s.ActivationsResponse, then: list[float]) -> list[dict]:
    """The logit lens at the last position: each state's top guess, unchanged and with the set off, and the change
    of the unchanged guess's probability (`then`: its probability in each state with the set off)."""
    rows = []
    for a, b, p in zip(plain.logit_lens or [], off.logit_lens or [], then):
        was, now = a.top[-1][0], b.top[-1][0]
        rows.append({"label": a.label, "was": was, "now": now, "changed": was.id != now.id, "change": p - was.prob})
    return rows


async def ablate_context(engine: Engine, prompt: str, ivs: list[s.InterventionIn]) -> dict:
    """Everything the partial shows for the prompt with the set switched off. Raises InputError as the engine does."""
    plain = await engine.next_token(s.NextTokenRequest(text=prompt, n=BARS))
    last = [plain.prompt_tokens - 1]
    lens = s.ActivationsRequest(text=prompt, positions=last, residual_norms=False, logit_lens=1)
    plain_lens = await engine.activations(lens)
    if not ivs:
        return {"rows": bar_rows(plain, plain, None),
                "lens": lens_rows(plain_lens, plain_lens, [a.top[-1][0].prob for a in plain_lens.logit_lens or []]),
                "last": plain_lens.tokens[-1].text}
    off = await engine.next_token(s.NextTokenRequest(text=prompt, n=BARS, targets=[c.id for c in plain.before],
                                                     interventions=ivs))
    risen = [c.id for c in off.before if c.id not in {p.id for p in plain.before}]
    extra = await engine.next_token(s.NextTokenRequest(text=prompt, n=1, targets=risen)) if risen else None
    off_lens = await engine.activations(lens.model_copy(update={"interventions": ivs}))
    then = await engine.lens_probs([t.id for t in plain_lens.tokens],
                                   [a.top[-1][0].id for a in plain_lens.logit_lens or []], ivs)
    return {"rows": bar_rows(plain, off, extra), "lens": lens_rows(plain_lens, off_lens, then),
            "last": plain_lens.tokens[-1].text}


async def ablate_view(engine: Engine, prompt: str, off: str, toggle: str = "", mode: str = "zero",
                      layer: str = "", head: str = "") -> dict:
    """The partial's context: the set (after an optional toggle), the grid and the comparison, or a message."""
    info = engine.info()
    ivs = ablation.parse_off(off)
    notice = None
    if ivs is None:
        ivs, notice = [], "The set of switched-off parts in this link could not be read: everything is on."
    if toggle == "clear":
        ivs = []
    elif toggle == "shown-head":  # the head the attention view shows: the form's layer and head
        ivs = ablation.toggle(ivs, f"h{layer}.{head}", mode)
    elif toggle:
        ivs = ablation.toggle(ivs, toggle, mode)
    try:
        engine.interventions(ivs)
    except InputError as e:  # a hand-edited link naming a part this model lacks
        ivs, notice = [], f"{sentence(str(e))} Everything is on again."
    view = {"off": ablation.format_off(ivs), "items": [{"item": ablation.key(iv), "label": ablation.describe(iv)}
                                                       for iv in ivs],
            "grid": grid(info, ivs), "mode": "mean" if mode == "mean" else "zero", "notice": notice, "prompt": prompt}
    if not prompt:
        return {**view, "error": "Type a prompt above to switch parts of the model off.", "kind": "info"}
    return {**view, **await or_message(ablate_context(engine, prompt, ivs))}


@router.post("/partials/ablate", response_class=HTMLResponse)
async def ablate_partial(request: Request, engine: EngineDep, prompt: Annotated[str, Form()] = "",
                         off: Annotated[str, Form()] = "", toggle: Annotated[str, Form()] = "",
                         ablate_mode: Annotated[str, Form()] = "zero", layer: Annotated[str, Form()] = "",
                         head: Annotated[str, Form()] = ""):
    view = await ablate_view(engine, prompt, off, toggle, ablate_mode, layer, head)
    return partial(request, "partials/_ablate.html", a=view)
