"""Run planned SQL against the catalog: the one place a user's statement executes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlglot import exp

from flordb.errors import QueryError
from flordb.sql.plan import Plan, plan
from flordb.sql.schema import LogsSchema, load_schema
from flordb.store.catalog import Catalog
from flordb.store.readonly import check_statement

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

HIDDEN_TABLES = {"schema_version"}


def catalog_tables(catalog: Catalog) -> dict[str, dict[str, str]]:
    """Every table and view of the catalog with its columns and types (cached per catalog state)."""
    return catalog.cached("tables", lambda: _catalog_tables(catalog))


def _catalog_tables(catalog: Catalog) -> dict[str, dict[str, str]]:
    rows = catalog.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_catalog = current_database() AND table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for table, column, typ in rows:
        tables.setdefault(table, {})[column] = typ
    return tables


def prepare(catalog: Catalog, statement: str | exp.Expression, key: str | None = None) -> tuple[Plan, LogsSchema]:
    """A statement (text or an already parsed tree) planned against the catalog's current schema.

    With ``key`` (the statement's text), the plan is reused until the catalog changes:
    a query asked again costs only its execution.
    """
    if key is not None:
        return catalog.cached("plan:" + key, lambda: prepare(catalog, statement))
    logs = load_schema(catalog)
    return plan(statement, logs, catalog_tables(catalog)), logs


def run(catalog: Catalog, p: Plan, fetch: str = "arrow") -> Any:
    """The one place a user's statement executes, on a connection that cannot write or reach files.

    ``fetch="arrow"`` gives an Arrow table (NULL and NaN stay distinct until rendering);
    ``"rows"`` gives :class:`flordb.tabular.Rows`, which needs neither pyarrow nor pandas.
    """
    import duckdb

    check_statement(p.tree)  # and the connection itself cannot write or reach files (catalog.reader)
    try:
        out = catalog.read(p.sql, fetch)
    except duckdb.PermissionException as exc:
        raise QueryError(f"{describe_error(exc)}; queries read only the store: pass --allow-files PATH"
                         " (flor.query(..., allow_files=[PATH])) to join a local file") from None
    except duckdb.Error as exc:
        raise QueryError(describe_error(exc)) from None
    except RecursionError:
        raise QueryError("the query is nested too deeply; simplify it") from None
    if fetch == "rows":
        from flordb.tabular import Rows

        columns, rows = out
        return Rows(columns, [list(r) for r in rows])
    return out


def run_table(catalog: Catalog, p: Plan) -> "pa.Table":
    return run(catalog, p, "arrow")


def run_plan(catalog: Catalog, p: Plan) -> "pd.DataFrame":
    return run_table(catalog, p).to_pandas()


def describe_error(exc: Exception) -> str:
    """DuckDB's message whole, hints included, without the "Binder Error:" class prefix."""
    text = str(exc).strip() or type(exc).__name__
    for prefix in ("Binder Error: ", "Catalog Error: ", "Conversion Error: ", "Invalid Input Error: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if text.startswith("Parser Error: "):
        text = "SQL syntax error: " + text[len("Parser Error: "):]
    # One line, hints kept ("Did you mean ...", "Candidate bindings: ..."); DuckDB's caret drawing is dropped.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(line for line in lines if not line.startswith("LINE ") and set(line) != {"^"})


def execute(catalog: Catalog, sql: str) -> "pd.DataFrame":
    p, _ = prepare(catalog, sql)
    return run_plan(catalog, p)
