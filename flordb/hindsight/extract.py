"""Hindsight without replay: metrics a run printed, extracted from its console lines.

Most training scripts print their metrics (``| epoch 3 | lr 20.00 | loss 5.21
| ppl 183.5``). With console capture (:mod:`flordb.record.capture`) those
lines are in the ``console`` table with their loop coordinates, so a value
that was printed but never logged can be read back instantly. The scan runs in
DuckDB (RE2 regular expressions) over the captured lines.

Extracted values are stored like a replay's: in ``records`` with a replay id
starting with ``extract-``, and listed in ``replays`` with strategy
``extract`` and the pattern as statement. So the ``replay.<name>`` column of
``logs`` tells them apart (NULL: recorded; a replay id: replayed;
``extract-...``: extracted), and a later replay of the name replaces them:
where the current code logs the name, the replayed value is the reference.
Both are compared wherever both exist (:func:`compare`).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field

from flordb.errors import HindsightError
from flordb.store.catalog import Catalog

NUMBER = r"[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?"  # loose and fast in RE2; TRY_CAST drops what is not a number
PREFIX = "extract-"


class ExtractError(HindsightError):
    """A pattern or name extraction cannot use: bad input."""

    exit_code = 2


def default_pattern(name: str) -> str:
    """``loss 5.21``, ``loss: 5.21``, ``loss=5.21``, ``'loss': 5.21`` (not ``val_loss``, not ``loss_scale``)."""
    return rf"(?i)(?:^|[^A-Za-z0-9_.]){re.escape(name)}['\"]?[\s:=]+['\"]?({NUMBER})"


def check_pattern(pattern: str) -> str:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ExtractError(f"--pattern {pattern!r} is not a regular expression: {exc}") from None
    if compiled.groups < 1:
        raise ExtractError(f"--pattern {pattern!r} needs one group (...) around the number, e.g. 'loss=([0-9.]+)'")
    return pattern


@dataclass
class Extraction:
    """What a scan found; the values themselves wait in the temp table ``ext_scan`` of the connection."""

    name: str
    pattern: str
    values: int = 0  # (run, coordinate) pairs with a printed value
    runs: list[str] = field(default_factory=list)
    duplicates: int = 0  # coordinates that printed the name more than once (the first line wins)
    skipped: dict[str, str] = field(default_factory=dict)  # run_id -> why no value was written
    written: dict[str, str] = field(default_factory=dict)  # run_id -> replay id of the extraction
    comparison: "Comparison | None" = None


def _literal(pattern: str) -> str:
    """The pattern as a SQL string literal: DuckDB compiles a constant pattern once, not per row."""
    return "'" + pattern.replace("'", "''") + "'"


def _prefilter(name: str, pattern: str | None) -> str:
    """A cheap test every line the default pattern matches passes (``ILIKE``: ~8x faster than the regex).

    ASCII names only: ``ILIKE`` and RE2's ``(?i)`` fold case alike there.
    """
    if pattern or not name.isascii():
        return ""
    like = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("'", "''")
    return f" AND c.text ILIKE '%{like}%' ESCAPE '\\'"


def scan(cat: Catalog, name: str, pattern: str | None = None) -> Extraction:
    """Every value of ``name`` printed by recorded runs, one per (run, coordinate): the first line's with a number."""
    regex = check_pattern(pattern) if pattern else default_pattern(name)
    lit = _literal(regex)
    try:
        cat.execute(
            # the regex once per line (a filter on its result would be pushed down and run it twice);
            # the first line of a coordinate with a number wins
            f"""CREATE OR REPLACE TEMP TABLE ext_scan AS
                SELECT *, CAST(raw AS DOUBLE) AS num FROM (
                    SELECT run_id, path, coord, min(seq) FILTER (ok) AS seq, arg_min(raw, seq) FILTER (ok) AS raw,
                           count(*) FILTER (ok) AS n
                    FROM (SELECT *, TRY_CAST(raw AS DOUBLE) IS NOT NULL AS ok FROM (
                        SELECT c.run_id, c.path, c.coord, c.seq, regexp_extract(c.text, {lit}, 1) AS raw
                        FROM console c JOIN runs r USING (run_id)
                        WHERE r.mode = 'record' AND c.channel <> 'capture'{_prefilter(name, pattern)}))
                    GROUP BY ALL HAVING count(*) FILTER (ok) > 0)"""
        )
    except Exception as exc:  # a pattern RE2 cannot take (look-arounds, back references)
        raise ExtractError(f"cannot use the pattern {regex!r}: {str(exc).splitlines()[0]}") from None
    out = Extraction(name, regex)
    out.values, out.duplicates = cat.execute("SELECT count(*), count(*) FILTER (n > 1) FROM ext_scan").fetchone()
    out.runs = [r for (r,) in cat.execute("SELECT DISTINCT run_id FROM ext_scan ORDER BY 1").fetchall()]
    return out


def rows(cat: Catalog) -> list[tuple]:
    """(run_id, path, coord, printed number, line) of the last scan, in order."""
    return [(r, tuple(p), tuple(c), raw, line) for r, p, c, raw, line in cat.execute(
        "SELECT e.run_id, e.path, e.coord, e.raw, c.text FROM ext_scan e"
        " JOIN console c ON c.run_id = e.run_id AND c.seq = e.seq AND c.path = e.path AND c.coord = e.coord"
        " ORDER BY e.run_id, e.path, e.coord").fetchall()]


def printed_names(cat: Catalog, names: list[str]) -> dict[str, Extraction]:
    """The scan of each name some run printed (cheap enough for the query hook); ``ext_scan`` holds the scan of
    the last of ``names``."""
    out = {}
    for n in names:
        try:
            ex = scan(cat, n)
        except HindsightError:
            continue
        if ex.runs:
            out[n] = ex
    return out


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def tolerance(raw: str) -> float:
    """Half a unit of the last printed digit: ``183.5`` stands for anything in [183.45, 183.55]."""
    mantissa, _, exponent = raw.lower().partition("e")
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


# -- comparing with logged values -------------------------------------------------------------


@dataclass
class Comparison:
    compared: int = 0
    disagree: list[tuple] = field(default_factory=list)  # run_id, coord, printed, logged

    def summary(self, name: str) -> str:
        if not self.compared:
            return f"{name}: no logged or replayed value shares a coordinate with a printed one"
        if not self.disagree:
            return f"{name}: {self.compared} printed values agree with the logged or replayed ones"
        run_id, coord, printed, logged = self.disagree[0]
        return (f"{name}: {len(self.disagree)} of {self.compared} printed values disagree with the logged or"
                f" replayed ones (first: run {run_id} at {list(coord)}: printed {printed}, logged {logged!r})")


def compare(cat: Catalog, ex: Extraction) -> Comparison:
    """Printed values of the last scan against values logged by the run or replayed, at the same coordinates."""
    out = Comparison()
    for run_id, coord, raw, ref in cat.execute(
        f"""SELECT e.run_id, e.coord, e.raw, x.num FROM ext_scan e JOIN records x
            ON x.run_id = e.run_id AND x.path = e.path AND x.coord = e.coord
            WHERE lower(x.name) = lower(?) AND (x.replay_id IS NULL OR NOT starts_with(x.replay_id, '{PREFIX}'))
            ORDER BY e.run_id, e.coord""",
        [ex.name],
    ).fetchall():
        out.compared += 1
        value = float(raw)
        if ref is None or not (math.isclose(value, ref, rel_tol=1e-9) or abs(value - ref) <= tolerance(raw) * 1.0001):
            out.disagree.append((run_id, tuple(coord), raw, ref))
    return out


# -- writing -------------------------------------------------------------------------------------


def extract(cat: Catalog, name: str, pattern: str | None = None, ex: Extraction | None = None) -> Extraction:
    """Store the printed values of ``name`` where no recorded or replayed value is.

    Runs that logged ``name`` themselves get no extracted values (they are only
    compared). Coordinates a replay already filled keep the replayed value; an
    earlier extraction of the same coordinates is replaced. The values are
    written as segments first, the source of truth (:class:`SegmentWrite`),
    then ingested like a replay's, so ``flordb doctor --rebuild`` brings them
    back with their provenance.
    """
    ex = ex or scan(cat, name, pattern)  # ext_scan must hold this scan
    ex.comparison = compare(cat, ex)
    now = time.time()  # milliseconds in the id: a later extraction's id sorts after (see Catalog._load_replayed)
    stamp = f"{PREFIX}{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}{int(now * 1000) % 1000:03d}" \
            f"-{secrets.token_hex(2)}"
    statement = json.dumps({name: f"console: {ex.pattern}"})
    ex_ = cat.execute
    try:
        _stage(cat, name, stamp, ex)
        ((count,),) = ex_("SELECT count(*) FROM extracted").fetchall()
        if not count:
            return ex
        segment = SegmentWrite(cat, name, ex.pattern, stamp)  # on its own thread, while the catalog ingests
        ex_("BEGIN TRANSACTION")
        try:
            # as a replay's values (an earlier extraction of the same coordinates is replaced),
            # from the rows being written: nothing is read back
            cat.ingest_written(segment.meta, segment.end, segment.final, _routed(name))
            ex.written = {r: i for i, r in ex_(
                """INSERT OR REPLACE INTO replays (replay_id, run_id, names, version, statement, strategy,
                       iterations, started, seconds, estimate, status, fidelity)
                   SELECT replay_id, run_id, [?], NULL, ?, 'extract', string_agg(i, ',' ORDER BY i),
                          current_timestamp, 0.0, 0.0, 'extracted', NULL
                   FROM (SELECT DISTINCT replay_id, run_id, CAST(coord[1] AS VARCHAR) AS i FROM extracted)
                   GROUP BY replay_id, run_id
                   RETURNING replay_id, run_id""",
                [name, statement]).fetchall()}
            cat.changed()  # the catalog's generation: cached schemas and plans must see the new column
            segment.finish()  # the source of truth, complete before the catalog commits
            ex_("COMMIT")
        except BaseException:
            ex_("ROLLBACK")
            segment.finish(raising=False)  # whatever was written stays, for a later ingest
            raise
    finally:
        ex_("DROP VIEW IF EXISTS extracted")
        ex_("DROP TABLE IF EXISTS ext_ids")
        ex_("DROP TABLE IF EXISTS ext_keep")
    return ex


def _stage(cat: Catalog, name: str, stamp: str, ex: Extraction) -> None:
    """The view ``extracted``: the scanned values to store, each with its run's replay id.

    Runs that logged ``name`` themselves get none (``ex.skipped``); coordinates a replay filled keep
    the replayed value, the reference.
    """
    ex_ = cat.execute
    ex_(
        """CREATE OR REPLACE TEMP TABLE ext_ids AS SELECT run_id, $1 || '-' || left(md5(run_id), 6) AS replay_id
           FROM (SELECT DISTINCT run_id FROM ext_scan) WHERE run_id NOT IN
               (SELECT run_id FROM log_names WHERE lower(name) = lower($2) AND NOT replayed)""",
        [stamp, name],
    )
    eligible = {r for (r,) in ex_("SELECT run_id FROM ext_ids").fetchall()}
    ex.skipped = {r: "the run logged it itself" for r in ex.runs if r not in eligible}
    ex_(
        f"""CREATE OR REPLACE TEMP TABLE ext_keep AS SELECT DISTINCT e.run_id, e.path, e.coord
            FROM ext_scan e JOIN records x ON x.run_id = e.run_id AND x.path = e.path AND x.coord = e.coord
            WHERE lower(x.name) = lower(?) AND x.replay_id IS NOT NULL AND NOT starts_with(x.replay_id, '{PREFIX}')""",
        [name])
    (kept,) = ex_("SELECT count(*) FROM ext_keep").fetchone()
    ex_(  # a view: the rows are read a few times, never copied
        f"""CREATE OR REPLACE TEMP VIEW extracted AS
            SELECT e.run_id, e.path, e.coord, e.seq, e.num, i.replay_id FROM ext_scan e JOIN ext_ids i USING (run_id)
            {"ANTI JOIN ext_keep k USING (run_id, path, coord)" if kept else ""}""")


def _segment_rows(name: str) -> str:
    """The rows of ``extracted`` as a segment holds them: each names its run in ``aux``, its replay id in ``txt``."""
    from flordb.store.segments import FLOAT

    lit = "'" + name.replace("'", "''") + "'"
    return (f"SELECT 'log' AS kind, CAST(seq AS BIGINT) AS seq, CAST({lit} AS VARCHAR) AS name, path, coord,"
            f" CAST({FLOAT} AS TINYINT) AS vtype, num, replay_id AS txt, CAST(NULL AS DOUBLE) AS t0,"
            f" CAST(NULL AS DOUBLE) AS t1, CAST(NULL AS DOUBLE) AS t2, CAST(NULL AS BIGINT) AS n, run_id AS aux"
            f" FROM extracted")


def _routed(name: str) -> str:
    """The same rows as the catalog's ingest routes them (:meth:`Catalog.ingest_written`)."""
    return (f"SELECT * REPLACE (CAST(NULL AS VARCHAR) AS txt, CAST(NULL AS VARCHAR) AS aux),"
            f" aux AS target, txt AS replay_id FROM ({_segment_rows(name)})")


class SegmentWrite:
    """The values in the view ``extracted`` as one segment directory, the source of truth, written on a thread.

    ``segments/<ident>/`` (``ident``: the extraction's stamp) holds ``run.json``
    (mode ``extract``, the name and the pattern), one segment of ``log`` rows for every run at the
    coordinates of the console lines they were read from, each row naming
    its run in ``aux`` and its provenance (the replay id ``extract-...``) in
    ``txt``, and ``end.json``. The catalog ingests it like a replay worker's
    output (``Catalog._load_segments`` routes each row to its run). Segment
    first, ``run.json`` last (:meth:`finish`): ingest ignores a directory without ``run.json``.
    The rows are fetched as Arrow here; Parquet encoding and the disk write overlap the catalog's work.
    """

    def __init__(self, cat: Catalog, name: str, pattern: str, ident: str):
        import threading

        now = time.time()
        self.run_dir = cat.layout.run_dir(ident)
        self.final = self.run_dir / "seg-000001-000001.parquet"  # a folded file's name: nothing to fold later
        self.meta = {"run_id": ident, "mode": "extract", "replay_id": ident, "started": now, "version": None,
                     "extract": {"name": name, "pattern": pattern}}
        self.end = {"status": "finished", "ended": now, "error": None}
        self.error: BaseException | None = None
        table = cat.arrow(_segment_rows(name))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(target=self._write, args=(table,), name="flordb-extract-segment")
        self.thread.start()

    def _write(self, table) -> None:
        import pyarrow.parquet as pq

        tmp = self.run_dir / ".seg-000001-000001.tmp"
        try:  # as SegmentWriter writes them
            pq.write_table(table, tmp, compression="snappy", use_dictionary=["kind", "name", "path"],
                           write_statistics=False)
            os.replace(tmp, self.final)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            self.error = exc

    def finish(self, raising: bool = True) -> None:
        """Wait for the segment, then complete the directory (``end.json``, ``run.json`` last)."""
        from flordb.store.segments import write_json_atomic

        self.thread.join()
        if self.error is None:
            write_json_atomic(self.run_dir / "end.json", self.end)
            write_json_atomic(self.run_dir / "run.json", self.meta)
            return
        try:
            self.run_dir.rmdir()  # nothing was written: no directory left behind
        except OSError:
            pass
        if raising:
            raise self.error


# -- offering it for a missing column (the query hook) -------------------------------------------


def say(text: str) -> None:
    print(text, file=sys.stderr)


def offer(cat: Catalog, names: list[str], mode: str) -> set[str]:
    """For a query naming columns no run logged: extract those some runs printed, if the user agrees.

    Returns the names extracted. Runs and coordinates that never printed the
    name are left to replay, as before.
    """
    printed = printed_names(cat, names)
    if not printed:
        return set()
    for n, ex in printed.items():
        k = len(ex.runs)
        say(f"{n} was never logged, but {k} run{'s' if k != 1 else ''} printed it: it can be extracted from"
            f" their console output (instant), instead of replaying {'them' if k != 1 else 'it'}.")
    from flordb.hindsight.api import ConfirmationRequired, confirm

    try:
        go = confirm(f"Extract {', '.join(printed)} from the console output?", mode)
    except ConfirmationRequired:
        if mode == "ask":
            raise
        go = False
    if not go:
        return set()
    done = set()
    for n in printed:  # ext_scan still holds the last name's scan until the first extraction
        ex = extract(cat, n, ex=printed[n] if n == names[-1] and not done else None)
        done.add(n)
        say(f"{n}: {ex.values} values extracted from {len(ex.written)} run(s) (provenance: {PREFIX}...).")
        if ex.comparison and ex.comparison.compared:
            say(ex.comparison.summary(n))
    return done
