"""The Python query API: ``flor.query`` and ``flor.dataframe``.

Each call opens the catalog for the length of the call, ingests new segments
(so records of running runs are visible up to their last flush) and answers.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
import pyarrow as pa

from flordb.errors import QueryError, UnknownColumnError
from flordb.query.engine import prepare, run_table
from flordb.query.logs import ident
from flordb.store.catalog import Catalog, open_catalog
from flordb.store.layout import Layout

# Set by flordb.hindsight: called with (catalog, error, sql, replay) when a query
# names columns no run recorded; returns True when it filled them in.
MissingColumnHook = Callable[[Catalog, UnknownColumnError, str, str], bool]
missing_column_hook: MissingColumnHook | None = None
# Also set by flordb.hindsight: called with (catalog, plan, schema, sql, replay) before a
# query that reads log columns runs; returns True when it replayed something
# (values from a changed statement, or runs that lack a logged column).
StaleColumnHook = Callable[[Catalog, object, object, str, str], bool]
stale_column_hook: StaleColumnHook | None = None


def query(sql: str, replay: str = "ask", layout: Layout | None = None) -> pd.DataFrame:
    """Run SQL over the catalog; ``logs`` is the wide view of every run.

    ``replay`` says what to do when the query names a column no run recorded
    but the current code logs: "ask" (prompt on a terminal), "yes", or "no"; "strict" is "yes"
    and raises ``PartialAnswerError`` instead of warning when some runs' replay failed.
    """
    return query_table(sql, replay=replay, layout=layout).to_pandas()


def query_table(sql: str, replay: str = "ask", layout: Layout | None = None) -> pa.Table:
    """:func:`query` as an Arrow table (NULL and NaN kept apart), for renderers."""
    with open_catalog(layout) as cat:
        cat.ingest()
        try:
            p, logs = prepare(cat, sql)
        except UnknownColumnError as err:
            _load_hindsight()
            if missing_column_hook is None or replay == "no" or not missing_column_hook(cat, err, sql, replay):
                raise
            cat.ingest()
            try:
                p, logs = prepare(cat, sql)
            except UnknownColumnError as again:
                raise QueryError(
                    f"{', '.join(again.names)}: the current code logs it, but no recorded run of that script"
                    " could be replayed to fill it"
                ) from None
        if any(logs.columns[c].kind == "log" for c in p.logs_columns if c in logs.columns):
            _load_hindsight()
            if stale_column_hook is not None and stale_column_hook(cat, p, logs, sql, replay):
                cat.ingest()
                p, logs = prepare(cat, sql)
        return run_table(cat, p)


def dataframe(*names: str, replay: str = "ask", layout: Layout | None = None) -> pd.DataFrame:
    """Shorthand: the named columns plus the run and loop columns, ordered."""
    with open_catalog(layout) as cat:
        cat.ingest()
        from flordb.query.schema import load_schema

        schema = load_schema(cat)
    wanted = list(dict.fromkeys(names))
    loops = [c.name for c in schema.of_kind("loop")]
    if any(n in schema.columns for n in wanted):
        relevant = {x for n in wanted if n in schema.columns for p in schema.columns[n].paths for x in p}
        loops = [l for l in loops if l in relevant]
    lead = ["run_id", "version", "tstamp", *loops]
    cols = list(dict.fromkeys([*lead, *wanted]))
    select = ", ".join(ident(c).sql("duckdb") for c in cols)
    order = ", ".join(ident(c).sql("duckdb") for c in ["tstamp", "run_id", *loops])
    return query(f"SELECT {select} FROM logs ORDER BY {order}", replay=replay, layout=layout)


def _load_hindsight() -> None:
    """Hindsight registers its hooks on import; the query side does not depend on it."""
    try:
        import flordb.hindsight.api  # noqa: F401
    except ImportError:
        pass
