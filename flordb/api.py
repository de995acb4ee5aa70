"""The query orchestrator behind ``flor.query``, ``flor.dataframe`` and ``flordb query``.

One statement, read top to bottom:

1. prepare: parse once, plan it over the catalog's schema (a sqlglot tree from here on);
2. missing columns: hindsight replays what the current code logs, or the error stands;
3. stale or partly filled log columns: hindsight refreshes them, then the plan is redone;
4. execute: the one place a user's statement runs (:func:`flordb.sql.engine.run_table`).

This module sits above both :mod:`flordb.sql` and :mod:`flordb.hindsight`; neither
imports it. Each call ingests new segments first (when the segment directories
changed), so records of running runs are visible up to their last flush; a call
that finds nothing new writes nothing and reuses the process's read-only
connection, schema and plans (see :class:`flordb.store.catalog.Catalog`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlglot import exp

from flordb.errors import QueryError, UnknownColumnError
from flordb.sql.engine import prepare, run
from flordb.sql.logs import ident
from flordb.sql.plan import Plan, explained, logs_where, parse
from flordb.sql.schema import REPLAY_PREFIX, LogsSchema, load_schema
from flordb.store.catalog import Catalog, open_catalog
from flordb.store.layout import Layout
from flordb.tabular import Rows

if TYPE_CHECKING:
    import pyarrow as pa

INTO = ("pandas", "polars", "arrow")


def preload() -> None:
    """Import now what the first query in a process would, so that query answers as fast as the next.

    Called by ``import flordb`` in an interactive session (a notebook, IPython,
    the Python prompt), whose next step is a query; never in a training script,
    whose import stays light.
    """
    import pandas  # noqa: F401  the default result type (pulls in numpy)
    import pyarrow  # noqa: F401
    import sqlglot.dialects.duckdb  # noqa: F401  loaded by the first parse otherwise

    import flordb.hindsight.fill  # noqa: F401  the check for missing and stale columns
    import flordb.hindsight.partial  # noqa: F401


def query(sql: str, replay: str = "ask", layout: Layout | None = None, into: str = "pandas",
          allow_files=()) -> Any:
    """Run SQL over the catalog; ``logs`` is the wide view of every run.

    ``replay`` says what to do when the query names a column no run recorded
    but the current code logs: "ask" (prompt on a terminal), "yes", or "no"; "strict" is
    "yes", and raises ``PartialAnswerError`` where "yes" warns when some runs' replay failed.
    ``into`` is the result's type: "pandas" (a DataFrame), "polars" or "arrow".
    The query cannot write and reads only the store; ``allow_files`` names
    local files or directories it may also read.
    """
    if into not in INTO:
        raise QueryError(f"into={into!r}: choose one of {', '.join(INTO)}")
    return convert(query_table(sql, replay=replay, layout=layout, allow_files=allow_files), into)


def query_table(statement: str | exp.Expression, replay: str = "ask", layout: Layout | None = None,
                allow_files=()) -> "pa.Table":
    """:func:`query` as an Arrow table (NULL and NaN kept apart)."""
    return answer(statement, replay, layout, fetch="arrow", allow_files=allow_files)


def query_rows(statement: str | exp.Expression, replay: str = "ask", layout: Layout | None = None,
               allow_files=()) -> Rows:
    """:func:`query` as :class:`flordb.tabular.Rows`, for the CLI: no pyarrow, no pandas to import."""
    return answer(statement, replay, layout, fetch="rows", allow_files=allow_files)


def answer(statement: str | exp.Expression, replay: str, layout: Layout | None, fetch: str,
           allow_files=()) -> Any:
    """The orchestrator: prepare, fill missing columns, refresh stale ones, execute."""
    tree = parse(statement) if isinstance(statement, str) else statement
    key = statement if isinstance(statement, str) else None
    with open_catalog(layout, create=False, lazy=True) as cat:
        cat.allow_files = tuple(str(p) for p in allow_files)
        cat.ingest_if_changed()
        if explained(tree) is not None:
            return _explain(cat, tree, fetch)
        plan, schema = _prepare(cat, tree, replay, key)
        if _refresh(cat, plan, schema, tree, replay):
            cat.ingest()
            plan, schema = prepare(cat, tree)
        return run(cat, plan, fetch)


def _explain(cat: Catalog, tree: exp.Expression, fetch: str) -> Any:
    """EXPLAIN runs nothing: DuckDB's plan, or for columns no run recorded, the replay plan."""
    try:
        plan, _ = prepare(cat, tree)
    except UnknownColumnError as err:
        from flordb.hindsight.fill import explain_missing

        text = explain_missing(cat, err.names, logs_where(tree))
        if text is None:
            raise
        lines = [*text.splitlines(), "(EXPLAIN: nothing was replayed; run the query itself to replay)"]
        rows = Rows(["replay plan"], [[line] for line in lines])
        return rows if fetch == "rows" else rows.to_arrow()
    return run(cat, plan, fetch)


def _prepare(cat: Catalog, tree: exp.Expression, replay: str, key: str | None) -> tuple[Plan, LogsSchema]:
    """Plan the statement; columns no run recorded are replayed first when the current code logs them."""
    try:
        return prepare(cat, tree, key)
    except UnknownColumnError as err:
        if replay == "no":
            raise
        from flordb.hindsight.fill import fill_missing

        if not fill_missing(cat, err.names, logs_where(tree), replay):
            raise
    cat.ingest()
    try:
        return prepare(cat, tree)
    except UnknownColumnError as again:
        raise QueryError(
            f"{', '.join(again.names)}: the current code logs it, but no recorded run of that script"
            " could be replayed to fill it"
        ) from None


def _refresh(cat: Catalog, plan: Plan, schema: LogsSchema, tree: exp.Expression, replay: str) -> bool:
    """Log columns the statement reads whose replayed values are stale, or that some runs lack."""
    names = [schema.columns[c].source for c in plan.logs_columns
             if c in schema.columns and schema.columns[c].kind == "log"]
    if not names:
        return False
    from flordb.hindsight.fill import refresh

    replayed = [n for n in names if REPLAY_PREFIX + n in schema.columns]
    return refresh(cat, names, replayed, logs_where(tree), replay)


def convert(table: "pa.Table", into: str) -> Any:
    """An Arrow result as the caller asked for it."""
    if into == "arrow":
        return table
    if into == "polars":
        try:
            import polars
        except ImportError:
            raise QueryError("into='polars' needs polars: pip install polars") from None
        return polars.from_arrow(table)
    return table.to_pandas()


def dataframe(*names: str, replay: str = "ask", layout: Layout | None = None, into: str = "pandas") -> Any:
    """Shorthand: the named columns plus the run and loop columns, ordered."""
    with open_catalog(layout, create=False, lazy=True) as cat:
        cat.ingest_if_changed()
        schema = load_schema(cat)
    wanted = list(dict.fromkeys(names))
    loops = [c.name for c in schema.of_kind("loop")]
    if any(n in schema.columns for n in wanted):
        relevant = {x for n in wanted if n in schema.columns for p in schema.columns[n].paths for x in p}
        loops = [l for l in loops if l in relevant]
    lead = ["run_id", "version", "tstamp", *loops]
    cols = list(dict.fromkeys([*lead, *wanted]))
    tree = (exp.select(*(exp.column(ident(c)) for c in cols)).from_("logs")
            .order_by(*(exp.column(ident(c)) for c in ["tstamp", "run_id", *loops])))
    if into not in INTO:
        raise QueryError(f"into={into!r}: choose one of {', '.join(INTO)}")
    return convert(query_table(tree, replay=replay, layout=layout), into)
