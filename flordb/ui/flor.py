"""The one place the UI calls into FlorDB.

Every page is a thin view over the same Python API as the CLI; when that API
is renamed or reshaped, this module is the only one to change. Calls are
serialized: one FlorDB operation at a time per server, so two requests never
race on the catalog (training processes never open it, DESIGN decision 1).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import pyarrow as pa

from flordb.errors import FlorError, UnknownColumnError  # noqa: F401  (re-exported for the views)
from flordb.store.layout import Layout

_lock = threading.RLock()


@contextmanager
def serialized() -> Iterator[None]:
    with _lock:
        yield


def query_table(sql: str, layout: Layout) -> pa.Table:
    """Read-only SQL over the store, never replaying (the page asks first)."""
    from flordb.api import query_table as _query_table

    with _lock:
        return _query_table(sql, replay="no", layout=layout)


@contextmanager
def catalog(layout: Layout):
    """The catalog, ingested if the disk changed, for the length of one read (the writer attached only if used)."""
    from flordb.store.catalog import open_catalog

    with _lock, open_catalog(layout, create=False, lazy=True) as cat:
        cat.ingest_if_changed()
        yield cat


def rows(cat, sql: str) -> list[tuple]:
    """A read's rows on the shared read-only connection: no writer attached for a page that only reads."""
    return cat.read(sql, "rows")[1]


def scratch(**tables):
    """An in-memory DuckDB over Arrow tables (downsampling), with no file access."""
    from flordb.store.scratch import scratch as _scratch

    return _scratch(**tables)


def list_runs(layout: Layout) -> list[dict]:
    """The run listing of ``flordb runs``, one dict per run (run_id, name, tags, version, status, ...)."""
    from flordb.sql.runs import list_runs as _list_runs

    with _lock:
        return _list_runs(include_replays=False, layout=layout).to_pylist()


def label_run(layout: Layout, run_id: str, kind: str, value: str, remove: bool = False) -> str:
    """Add or remove a run's tag (or name): the code path of ``flordb tag``."""
    from flordb.sql.runs import label_run as _label_run

    with _lock:
        return _label_run(run_id, kind, value, remove=remove, layout=layout)


def schema(cat):
    """The columns of ``logs`` (name -> Column with kind, type and loop paths)."""
    from flordb.sql.schema import load_schema

    return load_schema(cat)


def decode(vtype, num, txt):
    from flordb.store.segments import decode as _decode

    return _decode(vtype, num, txt)


def ident_sql(name: str) -> str:
    """A quoted DuckDB identifier, built by sqlglot (never spliced by hand)."""
    from flordb.sql.logs import ident

    return ident(name).sql("duckdb")


def replay_prefix() -> str:
    from flordb.sql.schema import REPLAY_PREFIX

    return REPLAY_PREFIX


def completions(text_before_cursor: str, full_text: str, layout: Layout) -> tuple[str, list[str]]:
    """The shell's completion, on the catalog's vocabulary: (word replaced, suggestions)."""
    from flordb.cli.completion import suggest, vocabulary, word_before_cursor
    from flordb.sql.engine import catalog_tables

    with catalog(layout) as cat:
        vocab = vocabulary(schema(cat).names, catalog_tables(cat))
    return word_before_cursor(text_before_cursor, vocab), suggest(text_before_cursor, vocab, full_text)


# -- hindsight -----------------------------------------------------------------------------


def where_of(sql: str) -> str | None:
    """The WHERE predicate of a query over ``logs`` that narrows a replay, if any."""
    import sqlglot

    from flordb.sql.plan import logs_where

    try:
        cond = logs_where(sqlglot.parse_one(sql, read="duckdb"))
    except sqlglot.errors.ParseError:
        return None
    return cond.sql(dialect="duckdb") if cond is not None else None


def locate_statements(layout: Layout, names: list[str]) -> dict:
    from flordb.hindsight.plan import locate_statements as _locate

    return _locate(layout.work_tree, names)


def plan_replay(layout: Layout, names: list[str], where: str | None):
    """The replay plan a query naming ``names`` would run (runs that lack them only)."""
    from flordb.hindsight.plan import plan_replay as _plan

    with catalog(layout) as cat:
        return _plan(cat, names, where=where, workers=None, only_missing=True)


def render_plan(plan) -> str:
    from flordb.hindsight.api import render_plan as _render

    return _render(plan)


def replay(layout: Layout, names: list[str], where: str | None, on_task: Callable[[int, int], None]):
    """Replay ``names`` into the runs that lack them; ``on_task(done, total)`` after each task."""
    from flordb.hindsight.api import replay as _replay

    with _lock:
        return _replay(names, where=where, layout=layout, only_missing=True, confirm_mode="yes",
                       progress=on_task)


def version_source(layout: Layout, version: str, path: str) -> str:
    """The text of ``path`` in a (snapshot or patched) version."""
    from flordb.version.materialize import read_file

    with catalog(layout) as cat:
        row = cat.execute("SELECT git_dir FROM versions WHERE version = ?", [version]).fetchone()
    if row is None:
        raise FlorError(f"unknown version {version[:12]!r}")
    return read_file(row[0], version, path)


def version_files(layout: Layout, version: str) -> tuple[str, list[str]]:
    """(git dir, files) of a version."""
    from flordb.version.materialize import list_files

    with catalog(layout) as cat:
        row = cat.execute("SELECT git_dir FROM versions WHERE version = ?", [version]).fetchone()
    if row is None:
        raise FlorError(f"unknown version {version[:12]!r}")
    return row[0], list_files(row[0], version)


def read_version_file(git_dir: str, version: str, path: str) -> str:
    from flordb.version.materialize import read_file

    return read_file(git_dir, version, path)


# -- comparison ----------------------------------------------------------------------------


def compare(layout: Layout, a: str, b: str):
    from flordb.comparison import compare as _compare

    with _lock:
        return _compare(a, b, layout=layout, replay="no")
