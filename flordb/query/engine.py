"""Run planned SQL against the catalog and return a pandas DataFrame."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa

from flordb.errors import QueryError
from flordb.query.plan import Plan, plan
from flordb.query.schema import LogsSchema, load_schema
from flordb.store.catalog import Catalog
from flordb.store.readonly import check_statement

HIDDEN_TABLES = {"schema_version"}


def catalog_tables(catalog: Catalog) -> dict[str, dict[str, str]]:
    rows = catalog.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for table, column, typ in rows:
        tables.setdefault(table, {})[column] = typ
    return tables


def prepare(catalog: Catalog, sql: str) -> tuple[Plan, LogsSchema]:
    logs = load_schema(catalog)
    return plan(sql, logs, catalog_tables(catalog)), logs


def run_table(catalog: Catalog, p: Plan) -> pa.Table:
    """Execute on a connection that cannot write or reach files (flordb.store.readonly).

    The result is Arrow so that NULL and NaN stay distinct until rendering.
    """
    check_statement(p.tree)
    with catalog.reader() as con:
        try:
            if catalog.tracer is not None:
                catalog.tracer(p.sql, None)
            return con.sql(p.sql).to_arrow_table()
        except duckdb.PermissionException as exc:
            raise QueryError(f"{_first_line(exc)}; queries read only the store: pass --allow-files PATH"
                             " (flor.query(..., allow_files=[PATH])) to join a local file") from None
        except duckdb.Error as exc:
            raise QueryError(_first_line(exc)) from None
        except RecursionError:
            raise QueryError("the query is nested too deeply; simplify it") from None


def run_plan(catalog: Catalog, p: Plan) -> pd.DataFrame:
    return run_table(catalog, p).to_pandas()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.replace("Binder Error: ", "").replace("Parser Error: ", "SQL syntax error: ")


def execute(catalog: Catalog, sql: str) -> pd.DataFrame:
    p, _ = prepare(catalog, sql)
    return run_plan(catalog, p)
