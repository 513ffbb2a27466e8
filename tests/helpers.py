"""Checks the tests share: an error said as one sentence a person understands.

Imported as `helpers` (pytest puts tests/ on sys.path, as for llama_fixtures and live_server).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from model.loading import CheckpointError, load_model


def one_sentence(message: str) -> str:
    """A message for a person: one line, no traceback. Returns it, for further checks."""
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


def expect_error(ref: Path | str, pattern: str) -> str:
    """Loading `ref` fails with one CheckpointError sentence that names `ref` and matches `pattern`;
    returns it."""
    with pytest.raises(CheckpointError) as err:
        load_model(ref)
    message = one_sentence(str(err.value))
    assert str(ref) in message and re.search(pattern, message), message
    return message


def expect_http_error(r: httpx.Response, status: int, pattern: str) -> str:
    """The answer is `status` with one sentence that matches `pattern`; returns the sentence.

    The sentence is the JSON body's "message" for a JSON answer (its "error"'s, in the OpenAI
    API's shape), the body for a plain-text one. A sentence never starts in lower case
    (it may start with a figure, or a quoted guess).
    """
    assert r.status_code == status, (r.status_code, r.text[:500])
    if r.headers.get("content-type", "").startswith("application/json"):
        body = r.json()
        message = body["message"] if "message" in body else body["error"]["message"]
    else:
        assert r.headers.get("content-type", "").startswith("text/plain"), r.headers.get("content-type")
        message = r.text
    one_sentence(message)
    assert not message[0].islower(), message
    assert re.search(pattern, message), message
    return message


# ---------------------------------------------------------------- a heatmap in the browser (templates/partials/_figures.html)

def heatmap_cells(svg) -> int:
    """How many cells the heatmap (a playwright Locator, one svg) draws: the texts its rows hold for the readout."""
    return svg.evaluate("s => [...s.querySelectorAll('[data-r]')].map(g => g.dataset.v.split('|').filter(Boolean).length)"
                        ".reduce((a, b) => a + b, 0)")


def hover_cell(page, svg, r: int, c: int) -> None:
    """Move the mouse to the middle of the heatmap's cell in row r, column c (where data-grid puts it)."""
    svg.scroll_into_view_if_needed()
    x, y = svg.evaluate("""(s, [r, c]) => {
        const [x0, y0, size] = s.dataset.grid.split(" ").map(Number);
        const p = new DOMPoint(x0 + (c + 0.5) * size, y0 + (r + 0.5) * size).matrixTransform(s.getScreenCTM());
        return [p.x, p.y];
    }""", [r, c])
    page.mouse.move(x, y)
