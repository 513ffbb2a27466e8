"""The one kind of refusal every layer raises: a sentence a person reads, and the HTTP status it is answered with.

Routes turn a Problem into what their caller reads in one way each: JSON with the status (app/errors.py), a
message box in place of a partial (templating.or_message), a CSV download's plain sentence, a class event.
"""

from __future__ import annotations


def sentence(text: str) -> str:
    """A message as a person reads it: a capital first letter and a full stop."""
    text = text.strip()
    return (text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")) if text else text


class Problem(Exception):
    """A request refused; str() is what went wrong, `sentence` what a person reads."""

    status = 422
    retry_after: str | None = None  # for a refusal that goes away by itself, seconds to wait

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def sentence(self) -> str:
        return sentence(str(self))


class InputError(Problem):
    """What was asked cannot be done; the message says what was wrong and what is allowed (4xx)."""


class Busy(Problem):
    """Too much work already queued; the caller should retry shortly (503)."""

    status, retry_after = 503, "1"

    @property
    def sentence(self) -> str:
        return f"The model is busy ({self}). Try again in a moment."
