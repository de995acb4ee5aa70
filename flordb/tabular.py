"""One renderer for every result: query answers, dot-commands, run listings, plans, comparisons.

A result is an Arrow table or a pandas DataFrame (anything with columns and rows);
its text is a table, a vertical listing (one block per row, psql's expanded
mode), CSV, JSON or Markdown. Pandas is not imported here, so a command that
renders Arrow never loads it.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import math
import shutil
import sys
from typing import Any

FORMATS = ("table", "csv", "json", "vertical", "markdown")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    kind = type(value).__name__
    return kind in ("NAType", "NaTType")


def exact(value: Any) -> Any:
    """An integral ``Decimal`` as an ``int``: DuckDB's HUGEINT reaches pandas and Arrow as a
    DECIMAL(38,0), which tabulate and JSON would otherwise print as a float (``1.20893e+24``)."""
    if isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return value


def _display(value: Any) -> Any:
    """A value as a person reads it in a table: NULL for missing, timestamps to the second, integers exact."""
    if _is_missing(value):
        return None
    if isinstance(value, decimal.Decimal):
        return exact(value)
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dict) and type(value) is not dict:
        return str(value)  # a dict with its own text (a run's args); JSON keeps the object
    return value


NONFINITE = ("nan", "inf", "-inf")  # how NaN, inf and -inf are spelled: as DuckDB prints them


def plain(value: Any, nonfinite: tuple[str, str, str] = NONFINITE) -> Any:
    """A value as JSON can carry it: NaN and infinities become the strings of ``nonfinite``.

    The one JSON encoder of results: the CLI keeps DuckDB's spelling, the web page
    passes JavaScript's (``"NaN"``, ``"Infinity"``, ``"-Infinity"``).
    """
    if _is_missing(value):
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return nonfinite[0]
        if math.isinf(value):
            return nonfinite[1] if value > 0 else nonfinite[2]
        return value
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        value = exact(value)
        return value if isinstance(value, int) else str(value)
    if hasattr(value, "item"):
        try:
            return plain(value.item(), nonfinite)
        except (ValueError, TypeError):
            pass
    if isinstance(value, (list, tuple)):
        return [plain(v, nonfinite) for v in value]
    if isinstance(value, dict):
        return {k: plain(v, nonfinite) for k, v in value.items()}
    if isinstance(value, (int, str, bool)):
        return value
    return str(value)


def _json_cell(value: Any) -> Any:
    """JSON keeps objects whole (a run's args), and shows timestamps as tables do."""
    return plain(value if isinstance(value, dict) else _display(value))


_plain = plain  # the name comparison and older callers use


class Rows:
    """A small result built in Python (a run listing, a command's help): columns and rows of values."""

    def __init__(self, columns: list[str], rows: list[list[Any]]):
        self.column_names = list(columns)
        self.rows = rows

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def slice(self, offset: int, length: int) -> "Rows":
        return Rows(self.column_names, self.rows[offset: offset + length])

    def to_pylist(self) -> list[dict]:
        return [dict(zip(self.column_names, r)) for r in self.rows]

    def column(self, name: str) -> list[Any]:
        i = self.column_names.index(name)
        return [r[i] for r in self.rows]

    def to_arrow(self):
        import pyarrow as pa

        return pa.table({c: [r[i] for r in self.rows] for i, c in enumerate(self.column_names)})

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.column_names)


def columns_of(result) -> list[str]:
    return [str(c) for c in (result.column_names if hasattr(result, "column_names") else result.columns)]


def count_of(result) -> int:
    return result.num_rows if hasattr(result, "num_rows") else len(result)


def rows_of(result, limit: int | None = None, cell=None) -> list[list[Any]]:
    """Rows of a DataFrame or an Arrow table (which keeps NULL apart from NaN), at most ``limit``."""
    _cell = cell or _display
    if limit is not None and count_of(result) > limit:
        result = result.slice(0, limit) if hasattr(result, "slice") and hasattr(result, "num_rows") else result.head(limit)
    if hasattr(result, "to_pylist"):
        names = result.column_names
        return [[_cell(r[n]) for n in names] for r in result.to_pylist()]
    return [[_cell(v) for v in row] for row in result.itertuples(index=False, name=None)]


def _footer(n: int, shown: int) -> str:
    more = f", {n - shown} more not shown (.maxrows to change)" if shown < n else ""
    return f"({n} row{'s' if n != 1 else ''}{more})"


def render(df, fmt: str = "table", width: int | None = None, limit: int | None = None) -> str:
    """Text for ``df``; a table wider than the terminal turns vertical (only on a terminal).

    ``limit`` caps the rows of table and vertical output (CSV and JSON are data: always whole).
    """
    if fmt == "csv":
        return _csv(df)
    if fmt == "json":
        records = [dict(zip(columns_of(df), row)) for row in rows_of(df, cell=_json_cell)]
        return json.dumps(records, indent=1, ensure_ascii=False, default=str)
    if fmt == "vertical":
        return vertical(df, limit)
    if fmt == "markdown":
        return table(df, limit, tablefmt="github")
    text = table(df, limit)
    if width is None and sys.stdout.isatty():
        width = shutil.get_terminal_size((120, 24)).columns
    if width and len(columns_of(df)) > 1 and _widest(text) > width:
        fitted = _shorten_widest_column(df, limit, _widest(text) - width)
        if fitted is not None and _widest(fitted) <= width:
            return fitted
        return vertical(df, limit)
    return text


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _shorten_widest_column(df, limit: int | None, excess: int) -> str | None:
    """The table with its widest text column cut (``…``) by ``excess`` characters, if it stays readable."""
    names = columns_of(df)
    rows = rows_of(df, limit)
    widths = [max([len(n)] + [len(r[i].strip()) for r in rows if isinstance(r[i], str)]) for i, n in enumerate(names)]
    i = max(range(len(names)), key=widths.__getitem__)
    keep = widths[i] - excess
    if keep < 16 or not any(isinstance(r[i], str) for r in rows):
        return None
    for r in rows:
        if isinstance(r[i], str) and len(r[i].strip()) > keep:
            r[i] = r[i].strip()[: keep - 1] + "…"
    return table(Rows(names, rows), footer=False) + "\n" + _footer(count_of(df), len(rows))


def _csv(result) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns_of(result))
    for row in rows_of(result):
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue().rstrip("\n")


def table(df, limit: int | None = None, tablefmt: str = "psql", footer: bool = True) -> str:
    from tabulate import tabulate

    if len(columns_of(df)) == 0:
        return "(no columns)"
    rows = rows_of(df, limit)
    _keep_big_ints_exact(rows)
    # Text stays text: without this, tabulate shows a version "0123456" as 123456 and a tag "1e5" as 100000.
    text = [i for i in range(len(columns_of(df))) if any(isinstance(r[i], str) for r in rows)]
    body = tabulate(
        rows, headers=columns_of(df), tablefmt=tablefmt, missingval="NULL",
        floatfmt="g", disable_numparse=text or False,
    )
    return f"{body}\n{_footer(count_of(df), len(rows))}" if footer else body


def _keep_big_ints_exact(rows: list[list[Any]]) -> None:
    """A column mixing floats with integers beyond 2**53 becomes text: tabulate formats every
    number of a float column through ``float()``, which would round those integers."""
    for i in range(len(rows[0]) if rows else 0):
        values = [r[i] for r in rows]
        if any(isinstance(v, float) for v in values) and any(
            isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53 for v in values
        ):
            for r in rows:
                if isinstance(r[i], float):
                    r[i] = format(r[i], "g")
                elif isinstance(r[i], int):
                    r[i] = str(r[i])


def vertical(df, limit: int | None = None) -> str:
    """One block per row, like psql's expanded mode: readable however wide."""
    names = columns_of(df)
    pad = max((len(n) for n in names), default=0)
    blocks = []
    rows = rows_of(df, limit)
    for i, row in enumerate(rows, 1):
        lines = [f"-[ RECORD {i} ]" + "-" * max(0, pad - 10)]
        lines += [f"{n.ljust(pad)} | {'NULL' if v is None else v}" for n, v in zip(names, row)]
        blocks.append("\n".join(lines))
    blocks.append(_footer(count_of(df), len(rows)))
    return "\n".join(blocks)
