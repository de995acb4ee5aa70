"""SQL over the catalog: parse, resolve the columns of ``logs``, rewrite, run.

Each step is a function on the sqlglot tree; the user's statement is parsed
once and SQL is generated once. ``logs`` is replaced by a subquery built for
exactly the columns the statement names (DESIGN decision 3), so cost follows
the query, not the history.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from flordb.errors import QueryError, UnknownColumnError
from flordb.sql.logs import build_logs
from flordb.sql.schema import LogsSchema
from flordb.store.readonly import check_statement

DIALECT = "duckdb"
LOGS = "logs"
# sqlglot's words for a column it cannot find: bare ("Column 'x' could not be resolved") or
# qualified by a table alias ("Unknown column: x", as in `logs a ... a.x`).
_UNRESOLVED = re.compile(r"Column '(.+?)' could not be resolved|Unknown column: (\S+)")


@dataclass
class Plan:
    """A statement ready to run, with what hindsight needs to know about it."""

    tree: exp.Expression
    logs_columns: list[str]  # columns of `logs` the statement reads (empty: no `logs`)
    sql: str


def parse(sql: str) -> exp.Expression:
    """One statement, read-only. ``;`` at the end is fine. Parsed once per text (callers never mutate it)."""
    return _parse(sql)


@functools.lru_cache(maxsize=128)
def _parse(sql: str) -> exp.Expression:
    _check_first_word(sql)
    m = re.match(r"\s*EXPLAIN\b(\s+ANALY[SZ]E\b)?", sql, re.I)
    if m:  # parsed here: sqlglot reads EXPLAIN as an opaque command
        return exp.Command(this="EXPLAIN ANALYZE" if m.group(1) else "EXPLAIN", expression=parse(sql[m.end():]))
    try:
        with _quiet_sqlglot():
            trees = [t for t in sqlglot.parse(sql, read=DIALECT) if t is not None]
    except ParseError as exc:
        errors = exc.errors[0] if exc.errors else {}
        where = f" at line {errors.get('line')}, column {errors.get('col')}" if errors else ""
        desc = errors.get("description", str(exc)).splitlines()[0] if errors else str(exc).splitlines()[0]
        near = (errors.get("highlight") or "").strip()
        near = f" near {near!r}" if near else ""
        raise QueryError(f"SQL syntax error{where}{near}: {desc}") from None
    except SqlglotError as exc:
        raise QueryError(f"SQL syntax error: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise QueryError("the query is nested too deeply; simplify it") from None
    if not trees:
        raise QueryError("empty query: write a SELECT statement")
    if len(trees) > 1:
        raise QueryError("one statement at a time, please")
    tree = trees[0]
    check_statement(tree)  # queries only, all the way down (flordb.store.readonly)
    return tree


@contextlib.contextmanager
def _quiet_sqlglot():
    """sqlglot warns on stderr when it falls back to a raw command; the refusal says it in one line."""
    log = logging.getLogger("sqlglot")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def explained(tree: exp.Expression) -> exp.Expression | None:
    """The statement under EXPLAIN, or None when ``tree`` is not an EXPLAIN."""
    if isinstance(tree, exp.Command) and tree.name.upper().startswith("EXPLAIN") \
            and isinstance(tree.expression, exp.Expression) and not isinstance(tree.expression, exp.Literal):
        return tree.expression
    return None


STATEMENTS = ("SELECT", "WITH", "FROM", "DESCRIBE", "DESC", "SHOW", "EXPLAIN", "SUMMARIZE", "PRAGMA", "VALUES",
              "TABLE", "PIVOT", "UNPIVOT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "COPY", "SET",
              "USE", "BEGIN", "COMMIT", "ROLLBACK", "MERGE", "TRUNCATE", "ATTACH", "DETACH", "CALL", "EXPORT",
              "IMPORT", "INSTALL", "LOAD", "CHECKPOINT", "VACUUM", "ANALYZE", "RESET", "START")


def _check_first_word(sql: str) -> None:
    """A misspelt first keyword is named as such, not reported at a later token."""
    m = re.match(r"\s*(?:--[^\n]*\n\s*)*([A-Za-z_]+)", sql)
    if not m or m.group(1).upper() in STATEMENTS:
        return
    import difflib

    word = m.group(1)
    close = difflib.get_close_matches(word.upper(), STATEMENTS[:10], n=1)
    hint = f"; did you mean {close[0]}?" if close else "; a query starts with SELECT, WITH or FROM"
    raise QueryError(f"SQL syntax error at line 1: {word!r} is not a statement{hint}")


def reads_logs(tree: exp.Expression) -> bool:
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    return any(t.name == LOGS and not t.db and LOGS not in ctes for t in tree.find_all(exp.Table))


def resolve(tree: exp.Expression, logs: LogsSchema, tables: dict[str, dict[str, str]]) -> list[str]:
    """The columns of ``logs`` the statement reads; unknown ones raise UnknownColumnError.

    sqlglot's ``qualify`` does the resolution against a schema of every table;
    each unresolved name is noted and retried as a placeholder, so one error
    lists every missing column at once.
    """
    schema_map = dict(tables)
    schema_map[LOGS] = dict(logs.types())
    missing: list[str] = []
    for _ in range(50):
        try:
            qualified = qualify(
                tree.copy(), schema=MappingSchema(schema_map, dialect=DIALECT), dialect=DIALECT,
                quote_identifiers=False, validate_qualify_columns=True,
            )
            break
        except OptimizeError as exc:
            m = _UNRESOLVED.search(str(exc))
            name = m and (m.group(1) or m.group(2))
            if not name or name in schema_map[LOGS]:
                return _fallback_columns(tree, logs, missing)
            missing.append(name)
            schema_map[LOGS][name] = "VARCHAR"
        except SqlglotError:
            return _fallback_columns(tree, logs, missing)
    else:
        return _fallback_columns(tree, logs, missing)
    if missing:
        raise UnknownColumnError(_as_typed(tree, missing), logs.names)
    # sqlglot normalizes identifiers to lower case (DuckDB's are case-insensitive): map them back.
    known = _by_lower(logs.names)
    aliases = {t.alias_or_name for t in qualified.find_all(exp.Table) if t.name == LOGS}
    used = [known[c.name.lower()] for c in qualified.find_all(exp.Column)
            if c.table in aliases and c.name.lower() in known]
    return list(dict.fromkeys(used))


def _by_lower(names: list[str]) -> dict[str, str]:
    """Lower-cased name -> name; the first of names equal but for case wins (the schema prefixes the others)."""
    out: dict[str, str] = {}
    for n in names:
        out.setdefault(n.lower(), n)
    return out


def _as_typed(tree: exp.Expression, names: list[str]) -> list[str]:
    """The spelling the user typed for each (lower-cased) missing name, e.g. for hindsight's search."""
    typed = _by_lower([c.name for c in tree.find_all(exp.Column)])
    return [typed.get(n.lower(), n) for n in names]


def _fallback_columns(tree: exp.Expression, logs: LogsSchema, missing: list[str]) -> list[str]:
    """When qualify cannot follow the statement, take every name that could mean a logs column."""
    if missing:
        raise UnknownColumnError(_as_typed(tree, missing), logs.names)
    if any(isinstance(s, exp.Star) for s in tree.find_all(exp.Star)):
        return logs.names
    names = {c.name.lower() for c in tree.find_all(exp.Column)} | {i.name.lower() for i in tree.find_all(exp.Identifier)}
    return [n for n in logs.names if n.lower() in names]


def rewrite(tree: exp.Expression, logs: LogsSchema, columns: list[str]) -> exp.Expression:
    """Replace each reference to ``logs`` by the relation built for ``columns``."""
    relation = build_logs(logs, columns)

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.name == LOGS and not node.db:
            return relation.copy().subquery(exp.to_identifier(node.alias_or_name, quoted=True))
        return node

    return tree.copy().transform(swap)


def plan(statement: str | exp.Expression, logs: LogsSchema, tables: dict[str, dict[str, str]]) -> Plan:
    """The statement rewritten over the catalog; a tree is used as given (parsed once, by the caller)."""
    try:
        return _plan(statement, logs, tables)
    except RecursionError:
        raise QueryError("the query is nested too deeply; simplify it") from None


def _plan(statement: str | exp.Expression, logs: LogsSchema, tables: dict[str, dict[str, str]]) -> Plan:
    tree = parse(statement) if isinstance(statement, str) else statement
    inner = explained(tree)
    if inner is not None:
        p = plan(inner, logs, tables)
        return Plan(tree=tree, logs_columns=p.logs_columns, sql=f"{tree.name} {p.sql}")
    if not reads_logs(tree):
        return Plan(tree=tree, logs_columns=[], sql=tree.sql(dialect=DIALECT))
    columns = resolve(tree, logs, tables)
    if not columns:
        columns = ["run_id"]
    out = rewrite(tree, logs, columns)
    return Plan(tree=out, logs_columns=columns, sql=out.sql(dialect=DIALECT))


def logs_where(tree: exp.Expression) -> exp.Expression | None:
    """The WHERE condition of the first SELECT reading ``logs`` alone (no joins): what narrows a replay."""
    for select in tree.find_all(exp.Select):
        source = select.args.get("from_") or select.args.get("from")
        tables = [t.name for t in source.find_all(exp.Table)] if source is not None else []
        where = select.args.get("where")
        if LOGS in tables and where is not None and not select.args.get("joins"):
            return where.this.copy()  # callers may combine it; the parsed tree is shared
    return None
