"""A chat model's own template: how its conversation is written out as one text, with the special
tokens (<|im_start|>, <|im_end|>) that mark who speaks.

Post-training taught an instruct model to answer in this layout; a base model has never seen it.
The template comes from the model's file (a GGUF file's tokenizer.chat_template), written in
Jinja, and is rendered in Jinja's sandbox: it is code from a file, and must not reach anything
beyond the messages it is given. What the template wrote is encoded with allow_special, so its markers
become the special tokens they name; the messages' own words are not, so the same characters typed by
hand stay text (chat_parts keeps the two apart).
"""

from __future__ import annotations

import re

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


SPEAKERS = {"Human:": "user", "Assistant:": "assistant"}  # a transcript's speakers, and the roles templates know


def transcript_messages(text: str) -> list[dict[str, str]]:
    """A "Human: … / Assistant: …" transcript as the messages a chat template writes out. A line that opens with a
    speaker starts a turn; any other line goes on with the turn before (before any speaker, a Human's). A last
    Assistant turn with nothing written is where the model answers: it is left to add_generation_prompt."""
    messages: list[dict[str, str]] = []
    for line in text.split("\n"):
        speaker = next((s for s in SPEAKERS if line.startswith(s)), None)
        if speaker:
            messages.append({"role": SPEAKERS[speaker], "content": line[len(speaker):]})
        elif messages:
            messages[-1]["content"] += "\n" + line
        else:
            messages.append({"role": "user", "content": line})
    for m in messages:
        m["content"] = m["content"].strip()
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def _refuse(message: str) -> None:
    raise TemplateError(message)


def render_chat(template: str, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "") -> str:
    """The conversation as the model reads it; add_generation_prompt ends it where the assistant's turn
    begins. Raises ValueError, in a sentence, for a template that fails."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _refuse  # what the hub's templates call to refuse a conversation
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                bos_token=bos_token, eos_token=eos_token)
    except TemplateError as e:
        raise ValueError(f"the model's chat template cannot write this conversation ({e})") from None


def chat_parts(template: str, messages: list[dict[str, str]], **options) -> list[tuple[str, bool]]:
    """render_chat's text in parts, each (text, written by the template); a message's own words are never the
    template's. The template is rendered with a mark in each message's place, as it cannot tell them apart."""
    marked = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
    pieces = re.split("\ue000([0-9]+)\ue001", render_chat(template, marked, **options))
    parts = [(messages[int(p)]["content"], False) if k % 2 else (p, True) for k, p in enumerate(pieces)]
    return [(text, own) for text, own in parts if text]
