"""``flordb export``: a self-contained copy for any DuckDB client, pandas or polars.

The catalog itself only has FlorDB's normalized tables (``logs`` is built per
query), and another client holding it open would make flordb commands wait. An
export is a snapshot with ``runs`` and a materialized ``logs`` (every column),
plus ``args`` and ``replays``: one DuckDB file, or a directory of Parquet files.
It is written under a temporary name and renamed, then made read-only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from flordb.errors import ConfigError
from flordb.sql.engine import prepare
from flordb.sql.schema import load_schema
from flordb.store.catalog import open_catalog
from flordb.store.layout import Layout

TABLES = {
    "runs": "SELECT * EXCLUDE (clock0) FROM main.runs ORDER BY started, run_id",
    "args": "SELECT * FROM main.args",
    "replays": "SELECT * FROM main.replays ORDER BY started",
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def export(target: str | os.PathLike | None = None, layout: Layout | None = None) -> tuple[Path, dict[str, int]]:
    """Write the export; returns its path and the row count of each table."""
    target = Path(target or "flordb-export.duckdb").resolve()
    parquet = target.suffix != ".duckdb"
    if target.suffix not in (".duckdb", ".parquet", ""):
        raise ConfigError(f"--to {target.name}: name a FILE.duckdb or a DIR.parquet (a directory)")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    counts: dict[str, int] = {}
    with open_catalog(layout, create=False) as cat:
        cat.ingest()
        loops = ", ".join(f'"{c.name}"' for c in load_schema(cat).of_kind("loop"))
        plan, _ = prepare(cat, f"SELECT * FROM logs ORDER BY tstamp, run_id{', ' + loops if loops else ''}")
        queries = {"logs": plan.sql, **TABLES}
        if parquet:
            tmp.mkdir(parents=True)
            for name, sql in queries.items():
                cat.execute(f"COPY ({sql}) TO {_quote(str(tmp / (name + '.parquet')))} (FORMAT parquet)")
                counts[name] = cat.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
        else:
            cat.execute(f"ATTACH {_quote(str(tmp))} AS flordb_export")
            try:
                for name, sql in queries.items():
                    cat.execute(f'CREATE TABLE flordb_export."{name}" AS {sql}')
                    counts[name] = cat.execute(f'SELECT count(*) FROM flordb_export."{name}"').fetchone()[0]
            finally:
                cat.execute("DETACH flordb_export")
    if target.exists():
        _make_writable(target)
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    tmp.rename(target)
    _make_read_only(target)
    return target, counts


def _make_read_only(path: Path) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if p.is_file():
            p.chmod(0o444)


def _make_writable(path: Path) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if p.is_file():
            p.chmod(0o644)
