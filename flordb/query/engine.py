"""Run planned SQL against the catalog and return a pandas DataFrame."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa

from flordb.errors import QueryError
from flordb.query.plan import Plan, plan
from flordb.query.schema import LogsSchema, load_schema
from flordb.store.catalog import Catalog

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
    """Execute inside a transaction that is always rolled back: queries change nothing.

    The result is Arrow so that NULL and NaN stay distinct until rendering.
    """
    catalog.execute("BEGIN TRANSACTION")
    try:
        if catalog.tracer is not None:
            catalog.tracer(p.sql, None)
        return catalog.con.sql(p.sql).to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(_first_line(exc)) from None
    finally:
        catalog.execute("ROLLBACK")


def run_plan(catalog: Catalog, p: Plan) -> pd.DataFrame:
    return run_table(catalog, p).to_pandas()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.replace("Binder Error: ", "").replace("Parser Error: ", "SQL syntax error: ")


def execute(catalog: Catalog, sql: str) -> pd.DataFrame:
    p, _ = prepare(catalog, sql)
    return run_plan(catalog, p)
