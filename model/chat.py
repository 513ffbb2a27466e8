"""A chat model's own template: how its conversation is written out as one text, with the special
tokens (<|im_start|>, <|im_end|>) that mark who speaks.

Post-training taught an instruct model to answer in this layout; a base model has never seen it.
The template comes from the model's file (a GGUF file's tokenizer.chat_template), written in
Jinja, and is rendered in Jinja's sandbox: it is code from a file, and must not reach anything
beyond the messages it is given. The text it gives is encoded with allow_special, so its markers
become the special tokens they name, where the same characters typed by hand stay text.
"""

from __future__ import annotations

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


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
