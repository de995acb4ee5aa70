"""The DuckDB catalog: the only code that opens or writes ``flor.duckdb``.

Training processes never open it (DESIGN decision 1). The query side opens it
for writing for the length of one operation (ingest whatever complete segments
appeared since, record a replay) and closes it again, so two flordb processes
take turns instead of failing. User SQL runs on a read-only connection that a
process keeps from query to query; readers never make a writer wait (see
"connections" below).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb

from flordb.errors import NoStoreError, StoreError
from flordb.store.layout import Layout
from flordb.store.readonly import connect_reader, connect_retrying, first_line, is_lock_error
from flordb.store.segments import compact, iter_run_dirs, segment_files
from flordb.store.validate import Damaged, DamagedFile, check_segment, end_meta, quarantine, run_meta

Tracer = Callable[[str, Any], None]

# What does not change between queries (the schema of `logs`, the catalog's tables,
# the replayed statements), per catalog file and per catalog generation: reused
# across queries of one process until something is ingested or replayed.
_CACHE: dict[tuple[str, str], tuple[tuple, Any]] = {}
_GENERATION_SQL = "SELECT (SELECT max(version) FROM schema_version), generation FROM catalog_state"
# Per catalog file: (segments stamp, generation, valid until) after this process's last ingest.
_SEEN: dict[str, tuple[int, tuple, float]] = {}
UNFINISHED_RECHECK_S = 2.0


@functools.lru_cache(maxsize=1)
def _migrations() -> tuple[tuple[int, str, str], ...]:
    return tuple(migrations())


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every ``schema/NNN_name.sql``, in order."""
    found = []
    for entry in resources.files("flordb.schema").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name[:-4], entry.read_text()))
    return sorted(found)


@dataclass
class IngestStats:
    segments: int = 0
    rows: int = 0
    runs: int = 0
    folded: tuple = ()  # names of the run directories whose segments ingest folded


class _BadSegments(Exception):
    """Segments the batch load failed on: (file, run_id, reason)."""

    def __init__(self, files: list[tuple[str, str, str]]):
        super().__init__(f"{len(files)} damaged segments")
        self.files = files


class Catalog:
    """One open connection to the catalog, used as a context manager."""

    def __init__(self, layout: Layout, *, timeout: float | None = None, tracer: Tracer | None = None,
                 create: bool = True, lazy: bool = False):
        self.layout = layout
        self.path = layout.catalog
        self.timeout = float(os.environ.get("FLORDB_LOCK_TIMEOUT", "120")) if timeout is None else timeout
        self.tracer = tracer
        self.create = create  # False for commands that only read: no store is made where there is none
        # True for the query path: the writing connection is attached only when something must be
        # written; until then the process's shared read-only connection answers (see reader()).
        self.lazy = lazy
        self._con: duckdb.DuckDBPyConnection | None = None
        self._reopen = False  # reader() closed the writing connection; reopen it when used
        self.allow_files: tuple[str, ...] = ()  # files user SQL may read (``--allow-files``)
        self._generation: tuple | None = None

    # -- connection ---------------------------------------------------------------

    def __enter__(self) -> "Catalog":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if self.create:
            self.layout.home.mkdir(parents=True, exist_ok=True)
        elif not self.layout.home.is_dir():
            raise NoStoreError(
                f"no FlorDB store at {self.layout.home}: run a script that calls flor.log there first,"
                " or cd into a project (FLORDB_HOME points elsewhere)"
            )
        if self.lazy:
            self._reopen = True  # attached on first use of `con`
            return
        self._open_writer()

    def _open_writer(self) -> None:
        self.con = connect_retrying(lambda: _attach(self.path), self.path, self.timeout,
                                    damaged="run `flordb doctor --rebuild` to rebuild it from the segments")
        self.migrate()

    def close(self) -> None:
        """Done with the catalog: the file is detached (its lock released) once no Catalog of this process uses it."""
        self._reopen = False
        if self._con is not None:
            con, self._con = self._con, None
            _detach(self.path, con)
        self._generation = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection | None:
        """The writing connection; opened again on first use after :meth:`reader` closed it."""
        if self._con is None and self._reopen:
            self._reopen = False
            self._open_writer()
        return self._con

    @con.setter
    def con(self, value: duckdb.DuckDBPyConnection | None) -> None:
        self._con = value

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection for user SQL (see :mod:`flordb.store.readonly`).

        DuckDB allows one configuration per file and process, so the writing
        connection is detached first; it is attached again only if this
        catalog is used for writing afterwards. The read-only connection itself
        stays open for the next query while the file stays the same (see
        :func:`_shared_reader`); each use gets its own cursor.
        """
        self._release_writer()
        entry = _shared_reader(self.path, tuple(self.allow_files), self.timeout)
        cur = entry.con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def _release_writer(self) -> None:
        """Detach the writing connection (if attached); it is attached again when next used."""
        reopen = self._reopen or self._con is not None
        if self._con is not None:
            con, self._con = self._con, None
            _detach(self.path, con)  # the file is free for the read-only configuration
        self._reopen = reopen

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        """Every statement goes through here, so ``tracer`` sees them all."""
        if self.tracer is not None:
            self.tracer(sql, params)
        assert self.con is not None, "catalog is not open"
        return self.con.execute(sql, params) if params is not None else self.con.execute(sql)

    def arrow(self, sql: str):
        """The result of ``sql`` on this (writing) connection, as an Arrow table: sees its temp tables."""
        if self.tracer is not None:
            self.tracer(sql, None)
        assert self.con is not None, "catalog is not open"
        return self.con.sql(sql).to_arrow_table()

    def executemany(self, sql: str, rows: list) -> None:
        if self.tracer is not None:
            self.tracer(sql, rows)
        assert self.con is not None, "catalog is not open"
        self.con.executemany(sql, rows)
        self._generation = None

    def read(self, sql: str, fetch: str = "arrow"):
        """A read-only statement's result, on a connection that cannot write or reach files.

        ``fetch="arrow"``: an Arrow table; ``"rows"``: (column names, list of row tuples),
        which needs no pyarrow (None and NaN stay apart either way).
        """
        with self.reader() as con:
            if self.tracer is not None:
                self.tracer(sql, None)
            if fetch == "rows":
                cur = con.execute(sql)
                return [d[0] for d in cur.description or []], cur.fetchall()
            return con.sql(sql).to_arrow_table()

    def read_arrow(self, sql: str):
        return self.read(sql, "arrow")

    # -- what stays the same between queries ------------------------------------------

    def generation(self) -> tuple:
        """(schema version, write counter): changes whenever this or another process writes the catalog."""
        if self._generation is None and self._con is None and self.lazy:
            self._generation = self._reader_generation()
        if self._generation is None:
            self._generation = self.execute(_GENERATION_SQL).fetchone()
        return self._generation

    def _reader_generation(self) -> tuple | None:
        """The generation the shared read-only connection sees; None when only the writer can say
        (no catalog file yet, or migrations to apply)."""
        if _file_id(self.path) is None:
            return None
        try:
            entry = _shared_reader(self.path, tuple(self.allow_files), self.timeout)
        except StoreError:
            return None
        latest = max((n for n, _, _ in _migrations()), default=0)
        gen = entry.generation
        return gen if gen is not None and gen[0] == latest else None

    def ingest_if_changed(self) -> IngestStats:
        """:meth:`ingest`, skipped when nothing on disk changed since this process last ingested.

        "Nothing changed": the modification times of ``segments/`` and of each run's
        directory are as they were (segments, ``run.json`` and ``end.json`` appear by
        rename, which touches their directory) and the catalog is at the generation
        that ingest left. While some run is still running its status may change
        without a file appearing (its process dies), so then the check expires after
        a moment; a run already interrupted stays so.
        """
        key = str(self.path)
        stamp = _segments_stamp(self.layout.segments)
        seen = _SEEN.get(key)
        if seen is not None and seen[0] == stamp and time.monotonic() < seen[2] and self.generation() == seen[1]:
            return IngestStats()
        stats = self.ingest()
        if stats.folded:  # folding touched those runs' directories, and nothing else may have
            after = _segments_stamp(self.layout.segments)
            if _only_folded(stamp, after, stats.folded):
                stamp = after
        running = bool(stats.runs) and self.execute(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'running')"
            " OR EXISTS (SELECT 1 FROM replay_workers WHERE status = 'running')").fetchone()[0]
        ttl = UNFINISHED_RECHECK_S if running else float("inf")
        _SEEN[key] = (stamp, self.generation(), time.monotonic() + ttl)
        return stats

    def changed(self) -> None:
        """Code that wrote the catalog directly says so: cached schemas and plans must see it."""
        self._bump()

    def _bump(self) -> None:
        """Inside a write transaction: the catalog changed (see :meth:`generation`)."""
        self.execute("UPDATE catalog_state SET generation = generation + 1")
        self._generation = None

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, reused while the catalog's generation stays the same. Callers must not mutate it."""
        gen = self.generation()
        slot = (str(self.path), key)
        hit = _CACHE.get(slot)
        if hit is not None and hit[0] == gen:
            return hit[1]
        value = compute()
        _CACHE[slot] = (gen, value)
        return value

    def migrate(self) -> None:
        """Apply the migrations not applied yet; a damaged catalog is a one-line StoreError."""
        try:
            self._migrate()
        except duckdb.Error as exc:  # e.g. a damaged catalog block
            if self._con is not None:
                self._con.close()
                self._con = None
            raise StoreError(f"cannot read the catalog {self.path}: {first_line(exc)};"
                             " run `flordb doctor --rebuild` to rebuild it from the segments") from None

    def _migrate(self) -> None:
        """Apply the migrations not applied yet; an up-to-date catalog is only read (no write, no lock wait)."""
        latest = max((n for n, _, _ in _migrations()), default=0)
        try:
            if self.generation()[0] == latest:  # one small read serves the check and the cache key
                return
        except duckdb.CatalogException:
            pass
        self._generation = None
        self.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, name VARCHAR, applied TIMESTAMPTZ DEFAULT current_timestamp)"
        )
        done = {row[0] for row in self.execute("SELECT version FROM schema_version").fetchall()}
        for number, name, sql in _migrations():
            if number in done:
                continue
            self.execute("BEGIN TRANSACTION")
            try:
                self.execute(sql)
                self.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [number, name])
                if number >= 5:  # catalog_state exists from migration 005 on
                    self._bump()
                self.execute("COMMIT")
            except duckdb.Error:
                self.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return self.execute("SELECT max(version) FROM schema_version").fetchone()[0]

    # -- ingest ---------------------------------------------------------------------

    def ingest(self) -> IngestStats:
        """Load every complete segment not loaded yet, in one transaction.

        Idempotent: a segment is listed in ``segments`` in the same transaction
        that loads its rows, so a crash mid-ingest loads it again next time.
        Each file is checked on its own first (:mod:`flordb.store.validate`): a
        damaged one is quarantined and the others are ingested all the same.
        """
        damaged: list[Damaged] = []
        for _ in range(3):
            try:
                return self._ingest(damaged)
            except _BadSegments as bad:
                for f, run_id, reason in bad.files:
                    damaged.append(quarantine(self.layout.home, Path(f), run_id, reason))
        raise StoreError("ingest keeps failing on damaged segments; run `flordb doctor`")

    def _ingest(self, damaged: list[Damaged]) -> IngestStats:
        stats = IngestStats()
        complete = {r[0] for r in self.execute(
            "SELECT run_id FROM runs WHERE complete UNION ALL SELECT run_id FROM replay_workers WHERE complete"
        ).fetchall()}
        seen: dict[str, set[str]] = {}
        for run_id, seg in self.execute(
            "SELECT s.run_id, s.segment FROM segments s JOIN"
            " (SELECT run_id FROM runs WHERE NOT complete UNION ALL"
            "  SELECT run_id FROM replay_workers WHERE NOT complete) r USING (run_id)"
        ).fetchall():
            seen.setdefault(run_id, set()).add(seg)
        home = self.layout.home
        run_rows, files, owners, label_rows = [], [], [], []
        finished: list[Path] = []
        for run_dir in iter_run_dirs(self.layout.segments):
            run_id = run_dir.name
            if run_id in complete:
                continue
            try:
                meta = run_meta(run_dir)
            except DamagedFile as bad:
                damaged.append(quarantine(home, run_dir / "run.json", run_id, bad.reason))
                continue
            if meta is None:
                continue  # the run is still being created
            try:
                end = end_meta(run_dir)  # read before listing: see docstring of segments
            except DamagedFile as bad:
                damaged.append(quarantine(home, run_dir / "end.json", run_id, bad.reason))
                end = None
            new = []
            for f in segment_files(run_dir):
                if f.name in seen.get(run_id, ()):
                    continue
                try:
                    check_segment(f)
                except DamagedFile as bad:
                    damaged.append(quarantine(home, f, run_id, bad.reason))
                    continue
                new.append(f)
            run_rows.append(self._run_row(meta, end, done=end is not None, run_dir=run_dir))
            if end is not None:
                finished.append(run_dir)
            given = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
            label_rows += [(meta["run_id"], "name", str(given["name"]))] if given.get("name") else []
            label_rows += [(meta["run_id"], "tag", str(t)) for t in given.get("tags") or [] if t]
            for f in new:
                files.append(str(f))
                owners.append((str(f), run_id, meta.get("replay_of") or run_id, meta.get("replay_id"), f.name))
        if not run_rows and not damaged:
            return stats
        try:
            self.execute("BEGIN TRANSACTION")
            try:
                self._record_damaged(damaged)
                self._upsert_runs(run_rows)
                self._bump()
                for run_id, kind, value in label_rows:  # given at record time: added once
                    self.execute(
                        "INSERT INTO run_labels (run_id, kind, value) SELECT ?, ?, ? WHERE NOT EXISTS"
                        " (SELECT 1 FROM run_labels WHERE run_id = ? AND kind = ? AND value = ?)",
                        [run_id, kind, value, run_id, kind, value],
                    )
                if files:
                    stats.rows = self._load_segments(files, owners)
                self._load_lineage()
                self.execute("COMMIT")
            except BaseException:
                self.execute("ROLLBACK")
                raise
            finally:
                self._generation = None
        except duckdb.Error as exc:
            culprits = self._find_bad_segments(files, owners) if files else []
            if culprits:
                raise _BadSegments(culprits) from None
            raise StoreError(f"could not ingest new records: {first_line(exc)}; run `flordb doctor`") from None
        del damaged[:]
        stats.segments, stats.runs = len(files), len(run_rows)
        stats.folded = self._compact(finished)
        return stats

    def _compact(self, run_dirs: list[Path]) -> tuple:
        """Fold the segments of runs that just finished (:func:`flordb.store.segments.compact`).

        Their records are committed, so this only saves disk: a store that cannot
        be written (read-only, full) keeps its segments as they are. Returns the
        names of the directories it touched.
        """
        folded = []
        for run_dir in run_dirs:
            try:
                compact(run_dir, self.con)
                folded.append(run_dir.name)
            except (OSError, duckdb.Error):
                continue
        return tuple(folded)

    def _find_bad_segments(self, files: list[str], owners: list[tuple]) -> list[tuple[str, str, str]]:
        """Load each file alone to name the ones the batch load failed on."""
        bad = []
        for f, owner in zip(files, owners):
            try:
                self.con.execute("SELECT * FROM read_parquet(?)", [f]).fetchall()
            except duckdb.Error as exc:
                bad.append((f, owner[1], f"unreadable data ({first_line(exc)[:120]})"))
        return bad

    def _record_damaged(self, damaged: list[Damaged]) -> None:
        if damaged:
            self.executemany(
                "INSERT INTO quarantine (run_id, file, reason, moved_to) VALUES (?, ?, ?, ?)",
                [(d.run_id, d.file, d.reason, d.moved_to) for d in damaged],
            )

    def _run_row(self, meta: dict, end: dict | None, done: bool, run_dir: Path | None = None) -> tuple:
        threads = (end or {}).get("threads")
        if end is not None:
            status, ended, error = end.get("status", "finished"), end.get("ended"), end.get("error")
        else:
            status, ended, error = ("running" if _alive(meta, run_dir) else "interrupted"), None, None
        started = meta.get("started")
        duration = (ended - started) if ended and started else None
        return (
            meta["run_id"], meta.get("version"), meta.get("script"), meta.get("argv") or [],
            status, error, started, ended, duration, meta.get("pid"), meta.get("host"),
            meta.get("user_head"), meta.get("user_branch"), meta.get("skipped") or [],
            meta.get("mode", "record"), meta.get("replay_of"), meta.get("replay_id"), done,
            meta.get("perf_start"), meta.get("startup"), meta.get("cwd"), threads,
            (end or {}).get("peak_rss"), (end or {}).get("gpus"),
            meta.get("git_dir"), meta.get("work_tree"),
        )

    def _upsert_runs(self, rows: list[tuple]) -> None:
        """Recorded runs into ``runs``, replay workers into ``replay_workers`` (same columns)."""
        hindsight = ("replay", "extract")  # an extraction's values are stored like a replay worker's
        for table, mode_rows in (("runs", [r for r in rows if r[14] not in hindsight]),
                                 ("replay_workers", [r for r in rows if r[14] in hindsight])):
            if mode_rows:
                self._upsert_into(table, mode_rows)
        self._upsert_versions(rows)

    def _upsert_into(self, table: str, rows: list[tuple]) -> None:
        self.executemany(
            f"""INSERT OR REPLACE INTO {table} (run_id, version, script, argv, status, error, started, ended,
                   duration, pid, host, user_head, user_branch, skipped, mode, replay_of, replay_id, complete,
                   clock0, startup, cwd, threads, peak_rss, gpus)
               VALUES (?, ?, ?, ?, ?, ?, to_timestamp(?), to_timestamp(?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [r[:-2] for r in rows],
        )

    def _upsert_versions(self, rows: list[tuple]) -> None:
        versions = {(r[1], r[-2], r[-1]) for r in rows if r[1]}
        if versions:
            self.executemany(
                "INSERT OR IGNORE INTO versions (version, git_dir, work_tree, kind) VALUES (?, ?, ?, 'snapshot')",
                [list(v) for v in versions],
            )

    def record_version(self, version: str, git_dir: str, parent: str | None = None) -> None:
        """A patched version made by hindsight; its parent is the original snapshot."""
        self.execute(
            "INSERT OR IGNORE INTO versions (version, git_dir, work_tree, parent, kind)"
            " VALUES (?, ?, ?, ?, 'patched')",
            [version, git_dir, str(self.layout.work_tree), parent],
        )
        self._bump()

    def add_label(self, run_id: str, kind: str, value: str) -> None:
        """A name, tag or note for a run (a run has one name and one note: a new one replaces it)."""
        self.execute("BEGIN TRANSACTION")
        try:
            if kind in ("name", "note"):
                self.execute("DELETE FROM run_labels WHERE run_id = ? AND kind = ?", [run_id, kind])
            else:
                self.execute("DELETE FROM run_labels WHERE run_id = ? AND kind = ? AND value = ?",
                             [run_id, kind, value])
            self.execute("INSERT INTO run_labels (run_id, kind, value) VALUES (?, ?, ?)", [run_id, kind, value])
            self._bump()
            self.execute("COMMIT")
        except BaseException:
            self.execute("ROLLBACK")
            raise

    def remove_label(self, run_id: str, kind: str, value: str) -> bool:
        """Take a tag (or the name or note) ``value`` off a run; False when the run had no such label."""
        args = [run_id, kind, value]
        found = self.execute("SELECT count(*) FROM run_labels WHERE run_id = ? AND kind = ? AND value = ?",
                             args).fetchone()[0]
        if found:
            self.execute("DELETE FROM run_labels WHERE run_id = ? AND kind = ? AND value = ?", args)
            self._bump()
        return bool(found)

    def record_replay(self, **row: Any) -> None:
        cols = ["replay_id", "run_id", "names", "version", "statement", "strategy", "iterations",
                "seconds", "estimate", "status", "fidelity"]
        cols += [c for c in ("work", "model", "executor", "workers", "threads", "attempts") if c in row]
        self.execute(
            f"INSERT OR REPLACE INTO replays ({', '.join(cols)}, started)"
            f" VALUES ({', '.join('?' for _ in cols)}, current_timestamp)",
            [row[c] for c in cols],
        )
        self._bump()

    def _load_replayed(self) -> None:
        """Route replay workers' records before the bulk insert.

        A name the run recorded itself is a fidelity check, not data: it goes
        to ``fidelity``. A hindsight value replaces any earlier replay's value
        at the same coordinates, so replaying twice never duplicates rows.
        """
        self.execute(  # the names replayed that their run recorded itself
            "CREATE OR REPLACE TEMP TABLE seg_recorded AS SELECT DISTINCT l.run_id, l.name FROM log_names l"
            " JOIN (SELECT DISTINCT target, name FROM seg_new WHERE kind = 'log' AND replay_id IS NOT NULL) t"
            " ON l.run_id = t.target AND l.name = t.name WHERE NOT l.replayed"
        )
        if self.execute("SELECT count(*) FROM seg_recorded").fetchone()[0]:  # none when seg_new is a view
            self.execute(
                "INSERT INTO fidelity SELECT s.target, s.replay_id, s.name, s.path, s.coord, s.vtype, s.num, s.txt"
                " FROM seg_new s JOIN seg_recorded r ON r.run_id = s.target AND r.name = s.name"
                " WHERE s.kind = 'log' AND s.replay_id IS NOT NULL"
            )
            self.execute(
                "DELETE FROM seg_new s USING seg_recorded r WHERE r.run_id = s.target AND r.name = s.name"
                " AND s.kind = 'log' AND s.replay_id IS NOT NULL"
            )
        # Extracted values (replay ids extract-..., hindsight/extract.py) yield to replayed ones and to
        # later extractions at the same coordinates, as they did when each was ingested on its own:
        # a rebuild loads them all in one batch.
        (files,) = self.execute("SELECT count(*) FROM seg_owner WHERE replay_id IS NOT NULL").fetchone()
        if files > 1:  # the values of one file never overlap
            self.execute(
                "DELETE FROM seg_new e USING seg_new r WHERE e.kind = 'log' AND r.kind = 'log'"
                " AND starts_with(e.replay_id, 'extract-') AND r.replay_id IS NOT NULL AND r.replay_id <> e.replay_id"
                " AND (NOT starts_with(r.replay_id, 'extract-') OR r.replay_id > e.replay_id)"
                " AND r.target = e.target AND r.name = e.name AND r.path = e.path AND r.coord = e.coord"
            )
        self.delete_records(
            "s.kind = 'log' AND s.replay_id IS NOT NULL AND x.replay_id IS NOT NULL AND x.run_id = s.target"
            " AND x.name = s.name AND x.path = s.path AND x.coord = s.coord", using="seg_new s"
        )
        self.execute("DROP TABLE seg_recorded")

    # -- log records (schema/022_record_layout.sql) ---------------------------------------

    def insert_records(self, source: str, params: Any = None) -> None:
        """Add the rows of ``source``, a SELECT in the columns of ``records`` (run_id, seq,
        name, path, coord, vtype, num, txt, replay_id), to ``record_rows``.

        New names, loop paths and runs get their ids first; the rows go in sorted by
        (name, run, path, coordinates), so each row group covers a narrow range of
        them and selective queries skip the others. ``source`` is read several
        times (``params`` each time): make it read a table, not something that changes.
        """
        rows = f"(SELECT * FROM ({source}) AS t(run_id, seq, name, path, coord, vtype, num, txt, replay_id))"
        for table, column in (("run_keys", "run_id"), ("names", "name"), ("paths", "path")):
            self._new_ids(table, column, rows, params=params)
        self.execute(
            "INSERT INTO record_rows SELECT n.name_id, k.run_key, p.path_id, r.coord[1], r.coord[2], r.coord[3],"
            " r.coord[4], CASE WHEN len(r.coord) > 4 THEN r.coord[5:] END, r.seq, r.vtype, r.num, r.txt,"
            f" r.replay_id FROM {rows} r"
            " JOIN run_keys k ON k.run_id IS NOT DISTINCT FROM r.run_id"
            " JOIN names n ON n.name IS NOT DISTINCT FROM r.name"
            " JOIN paths p ON p.path IS NOT DISTINCT FROM r.path"
            " ORDER BY n.name_id, k.run_key, p.path_id, r.coord[1], r.coord[2], r.coord[3], r.coord[4], r.seq",
            params,
        )
        self._generation = None

    def _new_ids(self, table: str, column: str, source: str, expr: str | None = None, params: Any = None) -> None:
        """Ids for the values of ``expr`` (default: ``column``) in ``source`` that ``table`` lacks."""
        key = {"run_keys": "run_key", "names": "name_id", "paths": "path_id"}[table]
        self.execute(
            f"INSERT INTO {table} SELECT (SELECT coalesce(max({key}), 0) FROM {table}) + row_number() OVER (),"
            f" v FROM (SELECT DISTINCT {expr or column} AS v FROM {source}) t WHERE NOT EXISTS"
            f" (SELECT 1 FROM {table} u WHERE u.{column} IS NOT DISTINCT FROM t.v)",
            params,
        )

    def delete_records(self, condition: str, params: Any = None, using: str | None = None) -> None:
        """Delete the records (alias ``x``, the columns of ``records``) for which ``condition``
        holds, joined with ``using`` (e.g. ``"seg_new s"``) when given."""
        source = "records_keyed x" + (f", {using}" if using else "")
        self.execute(
            f"DELETE FROM record_rows WHERE rowid IN (SELECT x.row_key FROM {source} WHERE {condition})", params
        )
        self._generation = None

    def _load_console(self) -> None:
        """Captured console lines (record/capture.py); a replay's own output is not kept."""
        self.execute(_load_console_sql())

    def _load_lineage(self) -> None:
        """``runs.parent_run``: the first checkpoint a run loaded (flor.load_checkpoint).

        Runs rows are replaced on every ingest while a run is in progress, so
        the parent is set again from ``lineage`` each time (new segments' rows
        are added by :meth:`_load_segments`, in the same transaction).
        """
        self.execute(
            "UPDATE runs SET parent_run = l.parent_run, parent_iteration = l.parent_iteration FROM"
            " (SELECT run_id, arg_min(parent_run, seq) AS parent_run, arg_min(parent_iteration, seq)"
            "  AS parent_iteration FROM lineage WHERE kind = 'checkpoint' GROUP BY run_id) l"
            " WHERE runs.run_id = l.run_id AND runs.parent_run IS NULL"
        )

    def ingest_written(self, meta: dict, end: dict, segment: Path, rows: str) -> None:
        """Ingest the run directory of ``segment``, its one segment, from ``rows``: a SELECT giving
        that segment's rows, each routed (with ``target`` and ``replay_id``), in this connection.

        What :meth:`ingest` would do for the directory once complete (``meta``: its ``run.json``,
        ``end``: its ``end.json``), without reading back or copying what is being written
        (hindsight/extract.py): ``rows`` is read in place, so it must hold no value of a name its
        run recorded itself (those would go to ``fidelity``), and at most one value per coordinate.
        Runs inside the caller's transaction.
        """
        try:
            self._upsert_runs([self._run_row(meta, end, done=True)])
            self._bump()
            self._load_segments([str(segment)], [(str(segment), meta["run_id"], meta["run_id"],
                                                  meta.get("replay_id"), segment.name)], rows)
        finally:
            self._generation = None

    def _load_segments(self, files: list[str], owners: list[tuple], rows: str | None = None) -> int:
        self.execute("CREATE OR REPLACE TEMP TABLE seg_owner (filename VARCHAR, run_id VARCHAR,"
                     " target VARCHAR, replay_id VARCHAR, segment VARCHAR)")
        self.executemany("INSERT INTO seg_owner VALUES (?, ?, ?, ?, ?)", owners)
        if rows is not None:  # the rows of the one file, already in this connection: read in place
            self.execute(f"CREATE OR REPLACE TEMP VIEW seg_new AS SELECT *, {_quote(files[0])} AS filename"
                         f" FROM ({rows})")
        else:
            self.execute(
                "CREATE OR REPLACE TEMP TABLE seg_new AS SELECT s.*, o.target, o.replay_id"
                " FROM read_parquet(?, filename = true, union_by_name = true) s JOIN seg_owner o USING (filename)",
                [files],
            )
            # An extraction's segment (hindsight/extract.py) holds values of many runs: each row names its
            # run in aux and its replay id in txt.
            self.execute(
                "UPDATE seg_new SET target = aux, replay_id = txt, aux = NULL, txt = NULL"
                " WHERE kind = 'log' AND starts_with(replay_id, 'extract-') AND aux IS NOT NULL"
            )
        self._new_ids("run_keys", "run_id", "seg_new", "target")  # loops without records have a run key too
        self._load_replayed()
        self.insert_records(
            "SELECT target, seq, name, path, coord, vtype, num, txt, replay_id FROM seg_new WHERE kind = 'log'"
        )
        names = ("""SELECT target, name, path, vtype, replay_id IS NOT NULL AS replayed, count(*) AS n
                    FROM seg_new WHERE kind = 'log' GROUP BY ALL""")
        if rows is not None:  # one value per coordinate: no duplicates to count
            self.execute(f"INSERT INTO log_names (run_id, name, path, vtype, n, replayed, dups)"
                         f" SELECT target, name, path, vtype, n, replayed, 0 FROM ({names})")
        else:
            self.execute(
                f"""INSERT INTO log_names (run_id, name, path, vtype, n, replayed, dups)
                    SELECT a.target, a.name, a.path, a.vtype, a.n, a.replayed, d.dups
                    FROM ({names}) a
                    JOIN (SELECT target, name, path, count(*) - count(DISTINCT hash(coord)) AS dups
                          FROM seg_new WHERE kind = 'log' GROUP BY ALL) d USING (target, name, path)"""
            )
        # A top-level loop entered again reuses its coordinates: every name of the run may repeat.
        self.execute(
            "UPDATE log_names SET dups = coalesce(dups, 0) + 1 WHERE run_id IN"
            " (SELECT target FROM seg_new WHERE kind = 'reloop' UNION"
            "  SELECT run_id FROM loops WHERE kind = 'reloop')"
        )
        self.execute(
            "INSERT INTO args SELECT target, name, vtype, num, txt FROM seg_new"
            " WHERE kind = 'arg' AND replay_id IS NULL"
        )
        self.execute(
            "INSERT INTO loops SELECT target, kind, path, coord, n, t0, t1, t2, replay_id FROM seg_new"
            " WHERE kind IN ('iter', 'loop', 'reloop')"
        )
        self.execute(
            "INSERT INTO checkpoints SELECT target, coord[1], name, txt, aux, n, t0 FROM seg_new"
            " WHERE kind = 'ckpt' AND replay_id IS NULL"
        )
        self._load_console()
        self.execute(
            "INSERT INTO lineage SELECT target, seq, aux, CASE aux WHEN 'checkpoint' THEN txt END, coord[1], name,"
            " CASE aux WHEN 'file' THEN txt END, n FROM seg_new WHERE kind = 'lineage' AND replay_id IS NULL"
        )
        self.execute(
            "INSERT INTO segments (run_id, segment, nrows) SELECT o.run_id, o.segment, count(s.filename)"
            " FROM seg_owner o LEFT JOIN seg_new s USING (filename) GROUP BY ALL"
        )
        count = self.execute("SELECT count(*) FROM seg_new").fetchone()[0]
        self.execute(f"DROP {'VIEW' if rows is not None else 'TABLE'} seg_new")
        self.execute("DROP TABLE seg_owner")
        return count


def _load_console_sql() -> str:
    levels = " ".join(f"WHEN {n} THEN '{name}'" for n, name in
                      ((10, "DEBUG"), (20, "INFO"), (30, "WARNING"), (40, "ERROR"), (50, "CRITICAL")))
    return (
        f"INSERT INTO console SELECT target, seq, path, coord, name, aux,"
        f" CASE n {levels} ELSE CAST(n AS VARCHAR) END, txt FROM seg_new"
        f" WHERE kind = 'console' AND replay_id IS NULL"
    )


# -- connections ---------------------------------------------------------------------------
#
# Starting a DuckDB database costs about 20 ms of CPU, attaching a file to a running one a
# few. So each process keeps one in-memory DuckDB instance, attaches a catalog file while a
# Catalog is open (one attachment per file, shared by the Catalogs of this process) and
# detaches it when the last closes, which releases the file's lock for other processes.
# Each Catalog has its own connection (a cursor: its own transactions, temp tables and
# default database, set with USE to the catalog file).
#
# Writers never wait on readers. Writers take turns on ``flor.duckdb.lock`` (an flock
# of our own). A writer then attaches the catalog in place; when other processes hold it
# open read-only (another flordb's query connection, a plain ``duckdb`` client), DuckDB's
# lock says so and the writer works on a copy instead, renamed over ``flor.duckdb`` when
# it is done: the readers keep the snapshot they opened, the next reader sees the new file.
#
# User SQL runs on one read-only, fenced connection per process (store/readonly.py), kept
# open from query to query while the file is the same one (same inode: nobody can rewrite
# it in place while we hold it open, only swap it).

_instance: duckdb.DuckDBPyConnection | None = None
_attached: dict[str, list] = {}  # path -> [alias, number of open Catalogs, lock file, swap copy or None]
_attach_lock = threading.RLock()
SWAP_SUFFIX = ".swap-"


def _busy(path) -> duckdb.IOException:
    """Another process is writing the catalog: the lock conflict that callers retry (:func:`is_lock_error`)."""
    return duckdb.IOException(f'Could not set lock on file "{path}": another flordb command is writing it')


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _attach(path) -> duckdb.DuckDBPyConnection:
    global _instance
    key = str(path)
    with _attach_lock:
        _close_reader(key)  # one configuration per file and process: the writer's, now
        if _instance is None:
            _instance = duckdb.connect()
        entry = _attached.get(key)
        if entry is None:
            alias = f"flor_catalog_{len(_attached)}_{os.getpid()}"
            while any(e[0] == alias for e in _attached.values()):
                alias += "_"
            lock = _take_write_lock(Path(key))
            try:
                swap = _attach_file(Path(key), alias, swappable=lock is not None)
            except BaseException:
                if lock is not None:
                    lock.close()
                raise
            entry = _attached[key] = [alias, 0, lock, swap]
        entry[1] += 1
        con = _instance.cursor()
    try:
        con.execute(f'USE "{entry[0]}"')
    except BaseException:
        _detach(path, con)
        raise
    return con


def _attach_file(path: Path, alias: str, swappable: bool) -> Path | None:
    """Attach the catalog in place, or a copy of it when other processes only read it
    (and ``swappable``: this process holds the writers' lock).

    Returns the copy's path (to be renamed over the catalog on detach), or None.
    """
    try:
        _instance.execute(f'ATTACH {_quote(str(path))} AS "{alias}"')
        return None
    except duckdb.Error as exc:
        if not is_lock_error(exc):
            raise
        if not swappable or not _only_readers(path) or Path(str(path) + ".wal").exists():
            raise
    copy = path.with_name(f"{path.name}{SWAP_SUFFIX}{os.getpid()}")
    shutil.copyfile(path, copy)
    try:
        _instance.execute(f'ATTACH {_quote(str(copy))} AS "{alias}"')
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    return copy


def _only_readers(path: Path) -> bool:
    """Is the catalog held by other processes for reading only (DuckDB's shared lock), none writing?"""
    try:
        import fcntl
        import struct
    except ImportError:
        return False
    query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0) + bytes(8)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return False
    finally:
        os.close(fd)  # this process holds no DuckDB lock on it here (its reader was closed first)
    return struct.unpack_from("h", answer)[0] == fcntl.F_RDLCK


def _take_write_lock(path: Path):
    """Our own writers' turn (an exclusive flock on ``<catalog>.lock``), or a lock conflict (:func:`_busy`).

    Returns the open lock file (closing it ends the turn), or None where there can be
    no such lock (a read-only directory, no flock): DuckDB's own lock still keeps
    writers apart there, and no copy is ever swapped in (see :func:`_attach_file`).
    """
    try:
        import fcntl

        lock = open(str(path) + ".lock", "a+b")
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise _busy(path) from None
    except OSError:
        lock.close()
        return None
    for stale in path.parent.glob(path.name + SWAP_SUFFIX + "*"):  # left by a writer that died mid-swap
        stale.unlink(missing_ok=True)
    return lock


def _detach(path, con: duckdb.DuckDBPyConnection) -> None:
    key = str(path)
    try:
        con.close()
    finally:
        with _attach_lock:
            entry = _attached.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del _attached[key]
                alias, _, lock, swap = entry
                try:
                    if swap is not None:
                        _instance.execute(f'CHECKPOINT "{alias}"')  # all of it in the file, no WAL
                    _instance.execute(f'DETACH "{alias}"')
                    if swap is not None:
                        if Path(str(swap) + ".wal").exists():
                            raise StoreError(f"could not complete the catalog copy {swap}; retry")
                        os.replace(swap, key)  # readers keep the old file; new ones open this one
                finally:
                    if swap is not None:
                        swap.unlink(missing_ok=True)
                        Path(str(swap) + ".wal").unlink(missing_ok=True)
                    if lock is not None:
                        lock.close()


@dataclass
class _Reader:
    con: duckdb.DuckDBPyConnection
    allow: tuple[str, ...]
    ident: tuple[int, ...] | None  # (device, inode, size, mtime) of the file it opened
    generation: tuple | None


_readers: dict[str, _Reader] = {}
MAX_READERS = 2  # catalogs a process keeps a reader open for (a notebook, a test switching stores)


def _file_id(path) -> tuple[int, ...] | None:
    """The catalog file's identity: a swap changes the inode; anything else writing it in place
    (never DuckDB while we hold it open) changes size or mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _shared_reader(path, allow: tuple[str, ...], timeout: float) -> _Reader:
    """The process's read-only connection to the catalog at ``path``, opened again when the file
    was swapped (a new inode) or the allowed files differ."""
    key = str(path)
    with _attach_lock:
        ident = _file_id(key)  # before connecting: a swap after this is seen next time
        entry = _readers.get(key)
        if entry is not None and entry.ident == ident and entry.allow == allow:
            return entry
        _close_reader(key)
        if key in _attached:
            raise StoreError(f"the catalog {key} is open for writing in this process; close it first")
        con = connect_reader(Path(key), allow_files=allow, timeout=timeout)
        try:
            generation = con.execute(_GENERATION_SQL).fetchone()
        except duckdb.Error:
            generation = None  # an old catalog: the writer migrates it
        entry = _readers[key] = _Reader(con, allow, ident, generation)
        while len(_readers) > MAX_READERS:
            _close_reader(next(iter(_readers)))
        return entry


def _close_reader(key: str) -> None:
    entry = _readers.pop(key, None)
    if entry is not None:
        entry.con.close()


def close_readers() -> None:
    """Close this process's read-only connections (their files are no longer held open)."""
    with _attach_lock:
        for key in list(_readers):
            _close_reader(key)


def _segments_stamp(root: Path) -> tuple:
    """A cheap fingerprint of the segments directory: its and each run directory's mtime."""
    try:
        top = os.stat(root).st_mtime_ns
        with os.scandir(root) as it:
            runs = tuple(sorted((e.name, e.stat().st_mtime_ns) for e in it if e.is_dir()))
    except OSError:
        return (0, ())
    return (top, runs)


def _only_folded(before: tuple, after: tuple, folded: tuple) -> bool:
    """Did only the folded runs' directories change between the two stamps (no new file elsewhere)?"""
    if before[0] != after[0] or [n for n, _ in before[1]] != [n for n, _ in after[1]]:
        return False
    return all(b == a or b[0] in folded for b, a in zip(before[1], after[1]))


HEARTBEAT_FILE = "heartbeat"


def heartbeat_limit() -> float:
    """Seconds without a heartbeat after which a run counts as interrupted, wherever it ran."""
    try:
        return float(os.environ.get("FLORDB_HEARTBEAT_LIMIT", "60"))
    except ValueError:
        return 60.0


def _alive(meta: dict, run_dir: Path | None = None) -> bool:
    """Is the process that wrote this run still running?

    A run refreshes ``<run>/heartbeat`` while it is alive (flordb.record.run),
    so a run killed on another host sharing the project directory turns
    ``interrupted`` once its heartbeat is older than :func:`heartbeat_limit`.
    On this host the PID says so at once.
    """
    pid = meta.get("pid")
    if meta.get("host") == socket.gethostname() and pid:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except (PermissionError, OverflowError, ValueError, TypeError):
            pass
    if run_dir is None:
        return meta.get("host") != socket.gethostname() and bool(pid)
    try:
        beat = (run_dir / HEARTBEAT_FILE).stat().st_mtime
    except OSError:  # a run from before heartbeats: its newest file stands in
        try:
            beat = max(e.stat().st_mtime for e in os.scandir(run_dir))
        except (OSError, ValueError):
            return False
    return time.time() - beat < heartbeat_limit()


def quarantined_count(layout: Layout | None = None) -> int:
    """How many files ingest has quarantined (``flordb runs`` mentions them); 0 where there is no store."""
    try:
        with open_catalog(layout, create=False) as cat:
            return cat.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    except NoStoreError:
        return 0


def open_catalog(layout: Layout | None = None, **kwargs) -> Catalog:
    """An unopened catalog for the current project; use ``with open_catalog() as cat:``."""
    if layout is None:
        from flordb.store.layout import locate

        layout = locate()
    return Catalog(layout, **kwargs)
