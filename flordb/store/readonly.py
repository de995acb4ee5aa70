"""The connection user SQL runs on: it cannot write, and it cannot reach files.

Queries are read-only by construction, not by rollback (DESIGN decision 8).
Two independent fences:

1. :func:`check_statement` refuses, on the sqlglot tree, every statement that
   is not a query, wherever it hides: inside ``EXPLAIN [ANALYZE]``, inside a
   CTE (``WITH d AS (DELETE ... RETURNING *)``), behind ``PRAGMA``.
2. :func:`connect_reader` opens the catalog with ``access_mode=READ_ONLY`` and
   ``enable_external_access=false`` and then locks the configuration, so even
   a statement the first fence missed cannot write the catalog, read
   ``/etc/passwd``, ``COPY`` into the store, ``ATTACH`` or ``LOAD`` anything.

Joining a local file is an explicit opt-in (``flordb query --allow-files PATH``):
only the named files and directories become readable, and writing to them is
still refused by the first fence.
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import duckdb
from sqlglot import exp

from flordb.errors import CatalogBusyError, QueryError, StoreError

T = TypeVar("T")

# Statements a user may run, by kind; anything else is refused before DuckDB sees it.
QUERY_KINDS = (exp.Query, exp.Describe, exp.Show, exp.Summarize)
# Nodes that write, anywhere in the tree (a CTE body, a subquery).
WRITE_KINDS = tuple(
    getattr(exp, n) for n in (
        "Insert", "Update", "Delete", "Create", "Drop", "Alter", "Merge", "Copy", "TruncateTable", "Set",
        "Use", "Transaction", "Commit", "Rollback", "Attach", "Detach", "Install", "Command", "Pragma",
        "LoadData", "Export", "Analyze",
    ) if hasattr(exp, n)
)
# PRAGMAs that only read the catalog's own metadata.
READ_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "database_list", "database_size",
    "storage_info", "version", "functions", "collations", "platform", "metadata_info",
})
# Per catalog file: the (directories, files) the last fenced database of this process allows.
_fenced: dict[str, tuple[list[str], list[str]]] = {}
_EXPLAIN_PREFIX = re.compile(r"^\s*(ANALYZE\b|\([^)]*\))\s*", re.IGNORECASE)


def check_statement(tree: exp.Expression, depth: int = 0) -> None:
    """Raise :class:`QueryError` unless ``tree`` is a read-only query, all the way down."""
    if isinstance(tree, exp.Command) and tree.name.upper().startswith("EXPLAIN") and depth < 4:
        inner = tree.expression
        if not isinstance(inner, exp.Expression) or isinstance(inner, exp.Literal):
            inner = _explained(tree)
        check_statement(inner, depth + 1)
        return
    if isinstance(tree, exp.Pragma):
        name = _pragma_name(tree)
        if name not in READ_PRAGMAS:
            raise QueryError(f"PRAGMA {name or '?'} is not allowed: queries are read-only (allowed: PRAGMA"
                             " table_info, show_tables, database_size, version)")
        return
    if not isinstance(tree, QUERY_KINDS):
        if isinstance(tree, exp.Command):
            kind = tree.name.upper()
        elif isinstance(tree, WRITE_KINDS):
            kind = tree.key.upper()
        else:
            kind = repr(tree.sql(dialect="duckdb")[:40])
        raise QueryError(f"{kind} is not allowed: queries are read-only;"
                         " write a SELECT, WITH, DESCRIBE, SUMMARIZE, SHOW or EXPLAIN statement")
    for node in tree.walk():
        if isinstance(node, WRITE_KINDS):
            kind = node.name.upper() if isinstance(node, exp.Command) else node.key.upper()
            raise QueryError(f"{kind} inside a query is not allowed: queries are read-only")


def _explained(tree: exp.Command) -> exp.Expression:
    """The statement an ``EXPLAIN [ANALYZE] [(options)]`` command wraps, parsed."""
    import sqlglot

    text = tree.expression.name if isinstance(tree.expression, exp.Literal) else str(tree.expression or "")
    while True:
        stripped = _EXPLAIN_PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    try:
        inner = [t for t in sqlglot.parse(text, read="duckdb") if t is not None]
    except Exception:
        raise QueryError("EXPLAIN of a statement that cannot be parsed is not allowed") from None
    if len(inner) != 1:
        raise QueryError("EXPLAIN takes one statement")
    return inner[0]


def _pragma_name(tree: exp.Pragma) -> str:
    inner = tree.this
    if isinstance(inner, (exp.Anonymous, exp.Func)):
        name = inner.name if isinstance(inner, exp.Anonymous) else inner.sql_name()
    else:
        name = inner.name if hasattr(inner, "name") else str(inner)
    return str(name).lower()


def _allowed(paths: Iterable[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """(directories, files) a user allowed, absolute; a missing path is a one-line error."""
    dirs, files = [], []
    for p in paths:
        path = Path(p).expanduser().resolve()
        if not path.exists():
            raise QueryError(f"--allow-files {p}: no such file or directory")
        (dirs if path.is_dir() else files).append(str(path) + (os.sep if path.is_dir() else ""))
    return dirs, files


def connect_reader(
    path: Path, *, allow_files: Iterable[str | os.PathLike] = (), timeout: float = 120.0
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog at ``path`` that cannot reach other files.

    No read-write connection to the same file may be open in this process
    (DuckDB refuses two configurations of one file): close it first.
    """
    dirs, files = _allowed(allow_files)
    con = connect_retrying(lambda: duckdb.connect(str(path), read_only=True), path, timeout,
                           damaged="run `flordb doctor` to check the store")
    try:
        if con.execute("SELECT current_setting('lock_configuration')").fetchone()[0]:
            # DuckDB gave us the database this process already opened (one per file): fenced by
            # an earlier call, which is fine when it allowed the same files.
            if _fenced.get(str(path)) == (dirs, files):
                return con
            raise StoreError(f"the catalog {path} is open in this process with other --allow-files;"
                             " close that connection first")
        _fenced[str(path)] = (dirs, files)
        if dirs:
            con.execute("SET allowed_directories = ?", [dirs])
        if files:
            con.execute("SET allowed_paths = ?", [files])
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def connect_retrying(connect: Callable[[], T], path, timeout: float, *, damaged: str) -> T:
    """``connect()`` until it stops failing on DuckDB's file lock, for at most ``timeout`` seconds.

    Another process holding the catalog is waited for (exponential backoff
    with jitter, up to 0.5 s a wait), then reported as :class:`CatalogBusyError`;
    any other DuckDB error is a damaged or unreadable file: a one-line
    :class:`StoreError` ending with ``damaged`` (what to do).
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return connect()
        except duckdb.Error as exc:
            if not is_lock_error(exc):
                raise StoreError(f"cannot open the catalog {path}: {first_line(exc)}; {damaged}") from None
            if time.monotonic() > deadline:
                raise CatalogBusyError(
                    f"the catalog {path} stayed locked by another process for {timeout:.0f} s;"
                    " retry, or raise FLORDB_LOCK_TIMEOUT"
                ) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)


def is_lock_error(exc: BaseException) -> bool:
    """DuckDB's lock conflict: an IOException that says it could not set the file lock.

    DuckDB has no exception type of its own for this; a damaged file is an
    IOException too, so the type alone is not enough and a bare "lock"
    substring is too much (it matches "block").
    """
    return isinstance(exc, duckdb.IOException) and "could not set lock on file" in str(exc).lower()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
