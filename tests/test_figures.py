"""The figures' geometry (app/views/figures.py): round ticks, mark labels that never overprint, and heatmaps whose long
sides keep readable labels."""

from __future__ import annotations

from app.views import figures


def test_ticks_are_round_and_cover_the_range():
    assert figures.nice_ticks(2.93, 7.9, 6) == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert figures.nice_ticks(0, 819200, 6) == [0.0, 200000.0, 400000.0, 600000.0, 800000.0, 1000000.0]
    assert figures.nice_ticks(3.0, 3.0, 6)[0] <= 3.0 <= figures.nice_ticks(3.0, 3.0, 6)[-1]  # one value: still a range


def test_close_marks_go_on_rows_of_their_own():
    series = [{"label": "loss", "class": "s-train", "points": [[x, 5 - x / 100] for x in range(0, 401, 100)]}]
    chart = figures.line_chart(series, [{"x": 100, "label": "stage 2"}, {"x": 110, "label": "stage 3"},
                                        {"x": 300, "label": "phase B", "class": "phase"}], "tokens seen", "loss")
    rows = [(m["label"], m["ty"]) for m in chart["marks"]]
    assert rows == [("stage 2", 26), ("stage 3", 41), ("phase B", 26)]  # the close one a row down; the far one not
    assert chart["series"][0]["points"].count(",") == 5  # a point per x
    assert [c["say"] for c in chart["columns"]][-1] == "After 400 tokens seen: loss 1.000"
    assert figures.line_chart([{"label": "x", "class": "", "points": []}], [], "x", "y") is None


def test_a_long_sides_labels_thin_out_and_grow():
    names = [f"t{i}" for i in range(61)]
    short = figures.heatmap(names[:6], names[:6], lambda r, c: 0.5 if c <= r else None, lambda v: v, str,
                            "{r} to {c}: {v}", {"r": names[:6], "c": names[:6]})
    assert [row["v"] for row in short["grid"]][:2] == ["0.5|||||", "0.5|0.5||||"]  # no text where value is None
    assert [s["stroke"] for s in short["shades"]] == [figures.colour(0.5)]  # one shade: one path of 21 cells
    assert short["shades"][0]["d"].count("h33") == 21 and short["width"] == 33
    assert len(short["rows"]) == 6 and short["rows"][0]["font"] is None
    long = figures.heatmap(names, names, lambda r, c: r / 60, lambda v: v, lambda v: f"{v:.2f}", "", {})
    assert len(long["rows"]) <= figures.LABELS and long["rows"][0]["font"] > 13  # every fourth, in a larger font
    assert sum(len(row["v"].split("|")) for row in long["grid"]) == 61 * 61
    assert long["shades"][-1]["stroke"] == "#16296b" and long["grid"][-1]["v"].startswith("1.00|")  # the darkest
    assert long["shades"][-1]["d"].startswith(f"M{long['x0']:g} {long['y0'] + 60 * 22 + 10.5:g}h21m1 0h21")
    assert long["numbers"] == []  # cells too small to print their numbers in
    numbered = figures.heatmap(names[:2], names[:2], lambda r, c: 0.9, lambda v: v, str, "", {}, lambda v: "9")
    assert [(k["text"], k["ink"]) for k in numbered["numbers"]] == [("9", "#ffffff")] * 4  # white on the dark
    assert figures.colour(0) == "#ffffff" and figures.colour(1) == "#16296b"
    assert figures.shown(" a\nb", 10) == "·a↵b" and figures.shown("abcdefgh", 4) == "abc…"
