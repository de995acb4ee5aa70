"""One renderer for every result: table, vertical (when too wide), csv or json."""

from __future__ import annotations

import json
import math
import shutil
import sys
from typing import Any

import pandas as pd

FORMATS = ("table", "csv", "json", "vertical")


def _cell(value: Any) -> Any:
    """A value as a person reads it in a table: NULL for missing, timestamps to the second."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat(sep=" ", timespec="seconds")
    return value


def _plain(value: Any) -> Any:
    """A value as JSON can carry it (NaN and inf become strings, like DuckDB prints them)."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if hasattr(value, "item"):
        try:
            return _plain(value.item())
        except (ValueError, TypeError):
            pass
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (int, str, bool)):
        return value
    return str(value)


def columns_of(result) -> list[str]:
    return [str(c) for c in (result.column_names if hasattr(result, "column_names") else result.columns)]


def rows_of(result) -> list[list[Any]]:
    """Rows of a DataFrame or an Arrow table (which keeps NULL apart from NaN)."""
    if hasattr(result, "to_pylist"):
        names = result.column_names
        return [[_cell(r[n]) for n in names] for r in result.to_pylist()]
    return [[_cell(v) for v in row] for row in result.itertuples(index=False, name=None)]


def render(df, fmt: str = "table", width: int | None = None) -> str:
    """Text for ``df``; a table wider than the terminal turns vertical (only on a terminal)."""
    if fmt == "csv":
        return _csv(df)
    if fmt == "json":
        records = [dict(zip(columns_of(df), (_plain(v) for v in row))) for row in rows_of(df)]
        return json.dumps(records, indent=1, ensure_ascii=False, default=str)
    if fmt == "vertical":
        return vertical(df)
    text = table(df)
    if width is None and sys.stdout.isatty():
        width = shutil.get_terminal_size((120, 24)).columns
    if width and len(columns_of(df)) > 1 and max(len(line) for line in text.splitlines()) > width:
        return vertical(df)
    return text


def _csv(result) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns_of(result))
    for row in rows_of(result):
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue().rstrip("\n")


def table(df) -> str:
    from tabulate import tabulate

    if len(columns_of(df)) == 0:
        return "(no columns)"
    rows = rows_of(df)
    # Text stays text: without this, tabulate shows a version "0123456" as 123456 and a tag "1e5" as 100000.
    text = [i for i in range(len(columns_of(df))) if any(isinstance(r[i], str) for r in rows)]
    body = tabulate(
        rows, headers=columns_of(df), tablefmt="psql", missingval="NULL",
        floatfmt="g", disable_numparse=text or False,
    )
    n = df.num_rows if hasattr(df, "num_rows") else len(df)
    return f"{body}\n({n} row{'s' if n != 1 else ''})"


def vertical(df) -> str:
    """One block per row, like psql's expanded mode: readable however wide."""
    names = columns_of(df)
    pad = max((len(n) for n in names), default=0)
    blocks = []
    for i, row in enumerate(rows_of(df), 1):
        lines = [f"-[ RECORD {i} ]" + "-" * max(0, pad - 10)]
        lines += [f"{n.ljust(pad)} | {'NULL' if v is None else v}" for n, v in zip(names, row)]
        blocks.append("\n".join(lines))
    n = df.num_rows if hasattr(df, "num_rows") else len(df)
    blocks.append(f"({n} row{'s' if n != 1 else ''})")
    return "\n".join(blocks)
