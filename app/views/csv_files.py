"""A table as a CSV file a spreadsheet opens safely: numbers as it reads them, no text it would run as a formula."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from fastapi.responses import Response

from model.training.training_log import finite

FORMULA_START = ("=", "+", "-", "@")


def cell(value: object) -> object:
    """A text a spreadsheet would run as a formula (a token such as "=cmd|..." typed into a prompt) is
    written with a leading apostrophe, which spreadsheets show as text; numbers are written as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        try:
            float(value)  # a number written by num(), such as "-0.5", is data
        except ValueError:
            return "'" + value
    return value


def csv_file(figure: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: CRLF line ends, quotes where a field needs them
    writer.writerow(header)
    writer.writerows([cell(v) for v in row] for row in rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="deepdive-{figure}.csv"'})


def num(x: float | int | None) -> str:
    """A number as a spreadsheet reads it: six significant digits, whole numbers without a point."""
    if x is None or not finite(x):
        return ""
    if isinstance(x, int) or float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"
