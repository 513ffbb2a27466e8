"""A training log (training_log.jsonl beside a checkpoint): one JSON record per line.

Read defensively: a page shows whatever a log holds, and a damaged line is skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def read_training_log(path: Path) -> list[dict] | None:
    """The training log's records (JSON lines), or None when the model has none; bad lines are skipped."""
    if not path.is_file():
        return None
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), int):
            records.append(r)
    return records


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def evaluations(records: list[dict]) -> list[dict]:
    """The log's evaluation records: those with tokens seen and a validation loss."""
    return [r for r in records if finite(r.get("tokens")) and finite(r.get("val_loss"))]


def other_sources(evals: list[dict]) -> dict[str, list[list[float]]]:
    """Each validation source besides the main one: its (tokens, loss) points, unless they only repeat
    val_loss (the main source is logged under both names)."""
    main = [[r["tokens"], r["val_loss"]] for r in evals]
    out = {}
    for name in sorted({k for r in evals for k in (r.get("val_losses") or {})}):
        points = [[r["tokens"], r["val_losses"][name]] for r in evals if finite((r.get("val_losses") or {}).get(name))]
        if points and points != main:
            out[name] = points
    return out
