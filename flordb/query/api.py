"""The Python query API: ``flor.query`` and ``flor.dataframe``.

Each call opens the catalog for the length of the call, ingests new segments
(so records of running runs are visible up to their last flush) and answers.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from flordb.errors import UnknownColumnError
from flordb.query.engine import prepare, run_plan
from flordb.query.logs import ident
from flordb.store.catalog import Catalog, open_catalog
from flordb.store.layout import Layout

# Set by flordb.hindsight: called with (catalog, error, sql, replay) when a query
# names columns no run recorded; returns True when it filled them in.
MissingColumnHook = Callable[[Catalog, UnknownColumnError, str, str], bool]
missing_column_hook: MissingColumnHook | None = None


def query(sql: str, replay: str = "ask", layout: Layout | None = None) -> pd.DataFrame:
    """Run SQL over the catalog; ``logs`` is the wide view of every run.

    ``replay`` says what to do when the query names a column no run recorded
    but the current code logs: "ask" (prompt on a terminal), "yes", or "no".
    """
    with open_catalog(layout) as cat:
        cat.ingest()
        try:
            p, _ = prepare(cat, sql)
        except UnknownColumnError as err:
            hook = _hook()
            if hook is None or replay == "no" or not hook(cat, err, sql, replay):
                raise
            cat.ingest()
            p, _ = prepare(cat, sql)
        return run_plan(cat, p)


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


def _hook() -> MissingColumnHook | None:
    if missing_column_hook is None:
        try:
            import flordb.hindsight.api  # noqa: F401  (registers the hook)
        except ImportError:
            return None
    return missing_column_hook
