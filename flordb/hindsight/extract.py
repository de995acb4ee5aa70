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
from pathlib import Path

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


def scan(cat: Catalog, name: str, pattern: str | None = None) -> Extraction:
    """Every value of ``name`` printed by recorded runs, one per (run, coordinate): the first line's."""
    pattern = check_pattern(pattern) if pattern else default_pattern(name)
    lit = _literal(pattern)
    try:
        cat.execute(
            f"""CREATE OR REPLACE TEMP TABLE ext_scan AS
                SELECT * FROM (
                    SELECT c.run_id, c.path, c.coord, min(c.seq) AS seq,
                           arg_min(regexp_extract(c.text, {lit}, 1), c.seq) AS raw,
                           arg_min(c.text, c.seq) AS line, count(*) AS n
                    FROM console c JOIN runs r USING (run_id)
                    WHERE r.mode = 'record' AND c.channel <> 'capture' AND regexp_matches(c.text, {lit})
                    GROUP BY ALL)
                WHERE TRY_CAST(raw AS DOUBLE) IS NOT NULL"""
        )
    except Exception as exc:  # a pattern RE2 cannot take (look-arounds, back references)
        raise ExtractError(f"cannot use the pattern {pattern!r}: {str(exc).splitlines()[0]}") from None
    out = Extraction(name, pattern)
    out.values, out.duplicates = cat.execute("SELECT count(*), count(*) FILTER (n > 1) FROM ext_scan").fetchone()
    out.runs = [r for (r,) in cat.execute("SELECT DISTINCT run_id FROM ext_scan ORDER BY 1").fetchall()]
    return out


def rows(cat: Catalog) -> list[tuple]:
    """(run_id, path, coord, printed number, line) of the last scan, in order."""
    return [(r, tuple(p), tuple(c), raw, line) for r, p, c, raw, line in cat.execute(
        "SELECT run_id, path, coord, raw, line FROM ext_scan ORDER BY run_id, path, coord").fetchall()]


def printed_names(cat: Catalog, names: list[str]) -> dict[str, int]:
    """How many runs printed each name (cheap enough for the query hook)."""
    out = {}
    for n in names:
        try:
            out[n] = len(scan(cat, n).runs)
        except HindsightError:
            out[n] = 0
    return {n: k for n, k in out.items() if k}


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
    written as segments first, the source of truth (:func:`write_segments`),
    then ingested like a replay's, so ``flordb doctor --rebuild`` brings them
    back with their provenance.
    """
    ex = ex or scan(cat, name, pattern)  # ext_scan must hold this scan
    ex.comparison = compare(cat, ex)
    recorded = {r[0] for r in cat.execute(
        "SELECT DISTINCT run_id FROM log_names WHERE lower(name) = lower(?) AND NOT replayed", [name]).fetchall()}
    ex.skipped = {r: "the run logged it itself" for r in ex.runs if r in recorded}
    now = time.time()  # milliseconds in the id: a later extraction's id sorts after (see Catalog._load_replayed)
    stamp = f"{PREFIX}{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}{int(now * 1000) % 1000:03d}" \
            f"-{secrets.token_hex(2)}"
    statement = json.dumps({name: f"console: {ex.pattern}"})
    ex_ = cat.execute
    ex_(
        """CREATE OR REPLACE TEMP TABLE extracted AS
            SELECT run_id, path, coord, seq, CAST(raw AS DOUBLE) AS num, $1 || '-' || left(md5(run_id), 6) AS replay_id
            FROM ext_scan WHERE run_id NOT IN
                (SELECT run_id FROM log_names WHERE lower(name) = lower($2) AND NOT replayed)""",
        [stamp, name],
    )
    try:
        ex_(  # a replay's value is the reference: keep it
            f"""DELETE FROM extracted e USING records x WHERE x.run_id = e.run_id AND lower(x.name) = lower(?)
                AND x.path = e.path AND x.coord = e.coord AND x.replay_id IS NOT NULL
                AND NOT starts_with(x.replay_id, '{PREFIX}')""", [name])
        write_segments(cat, name, ex.pattern, stamp)
        cat.ingest()  # as a replay's values: an earlier extraction of the same coordinates is replaced
        ex_("BEGIN TRANSACTION")
        try:
            ex_(
                """INSERT OR REPLACE INTO replays (replay_id, run_id, names, version, statement, strategy, iterations,
                       started, seconds, estimate, status, fidelity)
                   SELECT replay_id, run_id, [?], NULL, ?, 'extract',
                          string_agg(DISTINCT CAST(coord[1] AS VARCHAR), ',' ORDER BY CAST(coord[1] AS VARCHAR)),
                          current_timestamp, 0.0, 0.0, 'extracted', NULL
                   FROM extracted GROUP BY replay_id, run_id""",
                [name, statement],
            )
            ex.written = dict(ex_("SELECT DISTINCT run_id, replay_id FROM extracted").fetchall())
            cat.changed()  # the catalog's generation: cached schemas and plans must see the new column
            ex_("COMMIT")
        except BaseException:
            ex_("ROLLBACK")
            raise
    finally:
        ex_("DROP TABLE IF EXISTS extracted")
    return ex


def write_segments(cat: Catalog, name: str, pattern: str, ident: str) -> Path | None:
    """The values in the temp table ``extracted`` as one segment directory, the source of truth.

    ``segments/<ident>/`` (``ident``: the extraction's stamp) holds ``run.json``
    (mode ``extract``, the name and the pattern), one segment of ``log`` rows for every run at the
    coordinates of the console lines they were read from, each row naming
    its run in ``aux`` and its provenance (the replay id ``extract-...``) in
    ``txt``, and ``end.json``. The catalog ingests it like a replay worker's
    output (``Catalog._load_segments`` routes each row to its run). Segment
    first, ``run.json`` last: ingest ignores a directory without ``run.json``.
    """
    from flordb.store.segments import FLOAT, write_json_atomic

    ((count,),) = cat.execute("SELECT count(*) FROM extracted").fetchall()
    if not count:
        return None
    lit = "'" + name.replace("'", "''") + "'"
    run_dir = cat.layout.run_dir(ident)
    run_dir.mkdir(parents=True, exist_ok=True)
    # written by DuckDB, compressed, under a folded file's name: there is nothing to fold later
    tmp, final = run_dir / ".seg-000001-000001.tmp", run_dir / "seg-000001-000001.parquet"
    target = str(tmp).replace("'", "''")
    try:
        cat.execute(
            f"""COPY (SELECT 'log' AS kind, CAST(seq AS BIGINT) AS seq, CAST({lit} AS VARCHAR) AS name, path, coord,
                         CAST({FLOAT} AS TINYINT) AS vtype, num, replay_id AS txt, CAST(NULL AS DOUBLE) AS t0,
                         CAST(NULL AS DOUBLE) AS t1, CAST(NULL AS DOUBLE) AS t2, CAST(NULL AS BIGINT) AS n,
                         run_id AS aux
                  FROM extracted)
            TO '{target}' (FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2)""")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    now = time.time()
    write_json_atomic(run_dir / "end.json", {"status": "finished", "ended": now, "error": None})
    write_json_atomic(run_dir / "run.json", {"run_id": ident, "mode": "extract", "replay_id": ident, "started": now,
                                             "version": None, "extract": {"name": name, "pattern": pattern}})
    return run_dir


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
    for n, k in printed.items():
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
    for n in printed:
        ex = extract(cat, n)
        done.add(n)
        say(f"{n}: {ex.values} values extracted from {len(ex.written)} run(s) (provenance: {PREFIX}...).")
        if ex.comparison and ex.comparison.compared:
            say(ex.comparison.summary(n))
    return done
