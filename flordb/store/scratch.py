"""A throw-away in-memory DuckDB for computing over results already read (never the catalog).

No file access: it sees only the tables registered on it, so nothing computed here
can read or write the store or the user's files.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import duckdb


@contextmanager
def scratch(**tables) -> Iterator[duckdb.DuckDBPyConnection]:
    """``with scratch(t=arrow_table) as con: con.sql("SELECT ... FROM t")``."""
    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        for name, table in tables.items():
            con.register(name, table)
        yield con
    finally:
        con.close()
