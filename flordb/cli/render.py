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


def rows_of(df: pd.DataFrame) -> list[list[Any]]:
    return [[_cell(v) for v in row] for row in df.itertuples(index=False, name=None)]


def render(df: pd.DataFrame, fmt: str = "table", width: int | None = None) -> str:
    """Text for ``df``; a table wider than the terminal turns vertical (only on a terminal)."""
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        records = [dict(zip(df.columns, (_plain(v) for v in row))) for row in rows_of(df)]
        return json.dumps(records, indent=1, ensure_ascii=False, default=str)
    if fmt == "vertical":
        return vertical(df)
    text = table(df)
    if width is None and sys.stdout.isatty():
        width = shutil.get_terminal_size((120, 24)).columns
    if width and len(df.columns) > 1 and max(len(line) for line in text.splitlines()) > width:
        return vertical(df)
    return text


def table(df: pd.DataFrame) -> str:
    from tabulate import tabulate

    if len(df.columns) == 0:
        return "(no columns)"
    body = tabulate(
        rows_of(df), headers=list(map(str, df.columns)), tablefmt="psql", missingval="NULL",
        floatfmt="g",
    )
    return f"{body}\n({len(df)} row{'s' if len(df) != 1 else ''})"


def vertical(df: pd.DataFrame) -> str:
    """One block per row, like psql's expanded mode: readable however wide."""
    names = list(map(str, df.columns))
    pad = max((len(n) for n in names), default=0)
    blocks = []
    for i, row in enumerate(rows_of(df), 1):
        lines = [f"-[ RECORD {i} ]" + "-" * max(0, pad - 10)]
        lines += [f"{n.ljust(pad)} | {'NULL' if v is None else v}" for n, v in zip(names, row)]
        blocks.append("\n".join(lines))
    blocks.append(f"({len(df)} row{'s' if len(df) != 1 else ''})")
    return "\n".join(blocks)
