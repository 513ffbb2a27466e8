"""The geometry of the figures pages draw as SVG: where each line, cell and label goes, in the figure's own
units, from numbers the engine already computed. No model maths here, and no markup: the templates
(templates/partials/_figures.html) turn these plain dicts into SVG, escaping every text.

A figure's readout (static/js/figures.js) writes a sentence about the cell hovered or picked with the arrow keys
under it; the cells are numbered by `r` (row) and `c` (column).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from app.templating import WS_KINDS, WS_MARKS, si

# ---------------------------------------------------------------- line charts

CHART_W, CHART_H = 800, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 18, 14, 50
MARK_CHAR = 8.0   # a mark label's width per character, at the .chart .mark text font (12px, semibold), generously
MARK_ROW = 15     # the drop from one row of mark labels to the next


def nice_ticks(lo: float, hi: float, count: int) -> list[float]:
    """Round numbers (1, 2, 2.5 or 5 times a power of ten apart) covering lo..hi in about `count` steps."""
    span = (hi - lo) or 1.0
    mag = 10 ** math.floor(math.log10(span / count))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if span / (m * mag) <= count)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [float(f"{i * step:.12g}") for i in range(first, last + 1)]


def line_chart(series: list[dict], marks: list[dict], x_label: str, y_label: str,
               levels: Sequence[dict] = ()) -> dict | None:
    """series: [{label, class, points: [[x, y], ...], dots?}]; marks: [{x, label, class?}], vertical lines whose
    labels go on the first row where they clear the labels before them; levels: [{y, label, class?}], horizontal
    reference lines. None when there is nothing to draw."""
    xs = [p[0] for s in series for p in s["points"]]
    ys = [p[1] for s in series for p in s["points"]] + [level["y"] for level in levels]
    if not xs:
        return None
    x1 = max(xs) or 1
    y_ticks = nice_ticks(min(ys), max(ys), 6)
    y0, y1 = y_ticks[0], y_ticks[-1]
    right, bottom = CHART_W - RIGHT, CHART_H - BOTTOM

    def px(x: float) -> float:
        return round(LEFT + x / x1 * (right - LEFT), 1)

    def py(y: float) -> float:
        return round(bottom - (y - y0) / ((y1 - y0) or 1) * (bottom - TOP), 1)

    placed, row_ends = [], []
    for m in marks:
        x, width = px(m["x"]), len(m["label"]) * MARK_CHAR
        row = next((i for i, end in enumerate(row_ends) if end < x), None)
        if row is None:
            row = len(row_ends)
            row_ends.append(0.0)
        row_ends[row] = x + 4 + width + 6
        leftwards = x + 4 + width > right  # past the right edge: the label reads leftwards from its line
        placed.append({"x": x, "label": m["label"], "class": m.get("class", ""), "tx": x - 4 if leftwards else x + 4,
                       "ty": TOP + 12 + row * MARK_ROW, "anchor": "end" if leftwards else "start"})

    stops = sorted(set(xs))
    columns = []
    for i, x in enumerate(stops):
        values = [f"{s['label']} {p[1]:.3f}" for s in series for p in s["points"] if p[0] == x]
        lo = px((stops[i - 1] + x) / 2) if i else LEFT
        hi = px((x + stops[i + 1]) / 2) if i + 1 < len(stops) else right
        columns.append({"x": px(x), "x0": lo, "width": round(hi - lo, 1),
                        "say": f"After {si(x)} {x_label}: " + " · ".join(values)})
    return {
        "w": CHART_W, "h": CHART_H, "left": LEFT, "right": right, "top": TOP, "bottom": bottom,
        "x_label": x_label, "y_label": y_label,
        "y_ticks": [{"y": py(t), "label": f"{t:g}"} for t in y_ticks],
        "x_ticks": [{"x": px(t), "label": si(t)} for t in nice_ticks(0, x1, 6) if t <= x1],
        "series": [{"class": s["class"], "points": " ".join(f"{px(x)},{py(y)}" for x, y in s["points"]),
                    "dots": [(px(x), py(y)) for x, y in s["points"]] if s.get("dots") else []}
                   for s in series],
        "marks": placed, "columns": columns,
        "levels": [{"y": py(level["y"]), "label": level["label"], "class": level.get("class", "")} for level in levels],
    }


# ---------------------------------------------------------------- heatmaps

LABELS = 20  # the most labels along each side of a long text's map
# white -> deep blue, in steps a projector still tells apart (lab.css's .shade-0 … .shade-9, the logit lens cells,
# are this ramp at the middle of each tenth, with the same switch of ink)
RAMP = [(255, 255, 255), (205, 218, 252), (129, 157, 240), (54, 88, 204), (22, 41, 107)]
SHADES = 48  # a heatmap's steps along the ramp: the cells of each step are one path


def colour(t: float) -> str:
    x = max(0.0, min(1.0, t)) * (len(RAMP) - 1)
    i = min(len(RAMP) - 2, math.floor(x))
    f = x - i
    return "#{:02x}{:02x}{:02x}".format(*(round(a + (b - a) * f) for a, b in zip(RAMP[i], RAMP[i + 1])))


def shown(text: str, most: int) -> str:
    """A token as a label: whitespace as its mark (· ↵ → ␍), cut to `most` characters."""
    s = "".join(WS_MARKS[WS_KINDS[ch]] if ch in WS_KINDS else ch for ch in text)
    return s if len(s) <= most else s[:most - 1] + "…"


def heatmap(rows: Sequence[str], cols: Sequence[str], value: Callable[[int, int], float | None],
            shade: Callable[[float], float], text: Callable[[float], str], say: str, names: dict,
            number: Callable[[float], str] | None = None) -> dict:
    """A grid of cells, a row per `rows` label and a column per `cols` label; value(r, c) is None where there is no
    cell. A long side labels every few cells (at most LABELS), in a font as large as the room between labels.
    The readout fills `say`'s {r}, {c} and {v} with names["r"][row], names["c"][column] and text(value) (which holds
    no "|"). Shades are rounded to SHADES steps, and each is one path of squares."""
    dense = len(cols) > 24
    cell = 22 if dense else 34

    def side(n: int) -> dict:
        step = math.ceil(n / LABELS) if dense else 1
        return {"step": step, "font": round(0.6 * step * cell, 1) if step > 1 else None}

    across, down = side(len(cols)), side(len(rows))
    row_w = round(10 + (down["font"] or 13) * 0.62 * max([4] + [len(r) for r in rows]), 1)
    col_h = round(10 + (across["font"] or 13) * 0.55 * max([4] + [len(c) for c in cols]), 1)
    # the cells of one shade are one path, each a stroke as wide as the cell drawn from its left edge ("m" from the
    # end of the one before); a row keeps its cells' texts ("" where there is none), which the readout finds by the
    # pointer's position: a long prompt has a few hundred thousand cells
    s = cell - 1
    paths: dict[int, list[str]] = {}
    ends: dict[int, tuple[int, int]] = {}  # each shade's pen: where its last cell ended, in cells
    grid, numbers = [], []
    for r in range(len(rows)):
        texts = []
        for c in range(len(cols)):
            v = value(r, c)
            if v is None:
                texts.append("")
                continue
            t = shade(v)
            level = round(max(0.0, min(1.0, t)) * SHADES)
            if level in ends:
                er, ec = ends[level]
                paths[level].append(f"m{(c - ec) * cell - s} {(r - er) * cell}h{s}")
            else:
                paths[level] = [f"M{row_w + c * cell:g} {col_h + r * cell + s / 2:g}h{s}"]
            ends[level] = (r, c)
            texts.append(text(v))
            if number and cell >= 30 and number(v):
                numbers.append({"x": round(row_w + c * cell + cell / 2, 1), "y": round(col_h + r * cell + cell / 2 + 4, 1),
                                "text": number(v), "ink": "#ffffff" if t > 0.55 else "#14171c"})
        grid.append({"r": r, "v": "|".join(texts)})
    w, h = row_w + len(cols) * cell + 4, col_h + len(rows) * cell + 4
    return {
        "w": round(w, 1), "h": round(h, 1), "rem": round(w / 16, 2), "cell": cell, "half": cell / 2,
        "x0": row_w, "y0": col_h, "span": len(cols) * cell, "say": say, "names": names, "numbers": numbers,
        "shades": [{"stroke": colour(level / SHADES), "d": "".join(paths[level])} for level in sorted(paths)],
        "width": s,
        "cols": [{"x": round(row_w + c * cell + cell / 2, 1), "y": round(col_h - 6, 1), "text": label,
                  "font": across["font"]} for c, label in enumerate(cols) if c % across["step"] == 0],
        "rows": [{"x": round(row_w - 6, 1), "y": round(col_h + r * cell + cell / 2 + (down["font"] or 13) * 0.35, 1),
                  "text": label, "font": down["font"]} for r, label in enumerate(rows) if r % down["step"] == 0],
        "grid": grid,
    }


# ---------------------------------------------------------------- the logit lens

LENS_W, LENS_H, LENS_GAP = 76, 40, 2  # a lens cell (its top guess, cut to LENS_CHARS, over its probability)
LENS_CHARS = 8
LENS_HEAD = 30                        # the row of tokens along the top


def lens_grid(tokens: Sequence[str], labels: Sequence[str]) -> dict:
    """Where the logit lens puts its cells: a row per state (labelled on the left, "…: the prediction" on two
    lines), a column per token (labelled on top). Cell (r, c) is at x0 + c * dx, y0 + r * dy."""
    row_w = round(14 + 7.6 * max([12] + [len(label) + 1 for label in labels]))
    dx, dy = LENS_W + LENS_GAP, LENS_H + LENS_GAP
    w, h = row_w + len(tokens) * dx, LENS_HEAD + LENS_GAP + len(labels) * dy
    return {"w": w, "h": h, "rem": round(w / 16, 2), "x0": row_w, "y0": LENS_HEAD + LENS_GAP, "dx": dx, "dy": dy,
            "cw": LENS_W, "ch": LENS_H, "head": LENS_HEAD, "cols": [shown(t, LENS_CHARS) for t in tokens]}
