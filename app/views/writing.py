"""The Playground's stream as the page shows it: each event of a model's generation (app/serving/sources.py) becomes
HTML drawn by templates/partials/_written.html, out-of-band swaps aimed inside one column of the page (its `out`
id): the chips as they come, the counts, and the sentence that says why the writing ended."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator

from pydantic import Field

from app.schemas import answers as an
from app.serving.sources import GenerateRequest, PromptParts, Stream
from app.serving.streaming import sse
from app.templating import loss_class, pct, templates

# a name the page's reader ends on ("Assistant:"), for the sentence when the model stops at once
SPEAKER = re.compile(r"(?:^|\n)([A-Z][\w ]{0,24}):[^\n]*\Z", re.ASCII)


class PageRequest(GenerateRequest):
    """/playground/generate's request: what /api/generate takes, and the page's column that shows it."""

    out: str = Field(pattern=r"^pg-[a-z0-9-]{1,24}$", description="the id of the column the answer is drawn in")


def reason(done: an.DoneEvent, prompt: str, wrote: bool, eos_text: str) -> str:
    if done.message:
        return done.message
    if done.finish_reason == "stop" and not wrote:
        # nothing shows on a projector: say what happened, naming the speaker whose line the prompt ends on
        speaker = SPEAKER.search(prompt)
        ended = f"the {speaker[1]}'s line" if speaker else "the text"
        why = f"The model ended {ended} at once: its first token was the stop text."
    else:
        why = {"length": "Stopped at the token limit.", "stop": "Stopped at the stop text.",
               "eos": f"The model chose {eos_text}: it thinks the text is finished."}[done.finish_reason]
    prompt_tokens = "" if done.prompt_tokens is None else f"{done.prompt_tokens} prompt tokens, "
    return f"{why} {prompt_tokens}{done.completion_tokens} written."


def token_title(ev) -> str:
    """The facts a chip's tooltip and the detail panel list: a model server says no chance after the settings
    and lists its own alternatives only."""
    dice = ev.after or ev.before
    facts = ([] if ev.prob is None else [f"chance {pct(ev.prob)}"]) + \
        ([] if ev.raw_prob is None else [f"the model's own probability {pct(ev.raw_prob)}"]) + [f"token {ev.step + 1}"]
    if dice:
        facts.append(("the dice chose among: " if ev.after else "the model's most likely: ") +
                     ", ".join(f"“{c.text}” {pct(c.prob)}" for c in dice))
    return " · ".join(facts)


async def page_events(stream: Stream, req: PageRequest, eos_text: str) -> AsyncIterator[str]:
    draw = templates.env.get_template("partials/_written.html").module.event
    specials, chips = 0, 0  # the column's chips so far: the first is its one tab stop
    async for ev in stream:
        if isinstance(ev, PromptParts):
            yield sse(str(draw(req.out, "prompt", parts=ev.parts)), "prompt")
            specials = sum(1 for p in ev.parts if p.get("special"))
        elif isinstance(ev, an.DoneEvent):
            finish = reason(ev, req.prompt, chips > 0 or bool(ev.text), eos_text)
            yield sse(str(draw(req.out, "done", done=ev, finish=finish)), "done")
        else:
            token = None
            if ev.text:  # empty: part of a character, whose text comes with the next token
                loss = -math.log(ev.raw_prob) if ev.raw_prob else math.inf
                token = {"text": ev.text, "i": specials + chips, "cls": loss_class(loss), "title": token_title(ev)}
                chips += 1
            yield sse(str(draw(req.out, "token", token=token, count=ev.step + 1)), "token")
