"""Hindsight without replay: metrics a run printed, extracted from its console lines.

Most training scripts print their metrics (``| epoch 3 | lr 20.00 | loss 5.21
| ppl 183.5``). With console capture (:mod:`flordb.record.capture`) those
lines are in the ``console`` table with their loop coordinates, so a value
that was printed but never logged can be read back instantly. The scan runs in
DuckDB (RE2 regular expressions) over the captured lines.

Extracted values are written like a replay's: one segment directory per run
(``mode = 'extract'``), ingested into ``records`` with a replay id starting
with ``extract-``, and listed in ``replays`` with strategy ``extract``. So the
``replay.<name>`` column of ``logs`` tells them apart (NULL: recorded; a replay
id: replayed; ``extract-...``: extracted), the catalog can still be rebuilt
from segments, and a later replay of the name replaces them: where the current
code logs the name, the replayed value is the reference. Both are compared
wherever both exist (:func:`compare`).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import sys
import time
from dataclasses import dataclass, field

from flordb.errors import HindsightError
from flordb.store.catalog import Catalog

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
PREFIX = "extract-"


class ExtractError(HindsightError):
    """A pattern or name extraction cannot use: bad input."""

    exit_code = 2


def default_pattern(name: str) -> str:
    """``loss 5.21``, ``loss: 5.21``, ``loss=5.21``, ``'loss': 5.21`` (not ``val_loss``, not ``loss_scale``)."""
    return rf"(?i)(?:^|[^A-Za-z0-9_.]){re.escape(name)}['\"]?(?:\s*[:=]\s*|\s+)['\"]?({NUMBER})"


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
    name: str
    pattern: str
    rows: list[tuple] = field(default_factory=list)  # run_id, path, coord, raw number, line
    skipped: dict[str, str] = field(default_factory=dict)  # run_id -> why no value was written
    written: dict[str, str] = field(default_factory=dict)  # run_id -> replay id of the extraction
    duplicates: int = 0  # coordinates that printed the name more than once (the first line wins)
    comparison: "Comparison | None" = None

    @property
    def runs(self) -> list[str]:
        return sorted({r[0] for r in self.rows})


def scan(cat: Catalog, name: str, pattern: str | None = None) -> Extraction:
    """Every value of ``name`` printed by recorded runs, one per (run, coordinate): the first line."""
    pattern = check_pattern(pattern) if pattern else default_pattern(name)
    try:
        rows = cat.execute(
            """SELECT c.run_id, c.path, c.coord, arg_min(regexp_extract(c.text, $1, 1), c.seq),
                      arg_min(c.text, c.seq), count(*)
               FROM console c JOIN runs r USING (run_id)
               WHERE r.mode = 'record' AND c.channel <> 'capture' AND regexp_matches(c.text, $1)
               GROUP BY ALL ORDER BY c.run_id, c.path, c.coord""",
            [pattern],
        ).fetchall()
    except Exception as exc:  # a pattern RE2 cannot take (look-arounds, back references)
        raise ExtractError(f"cannot use the pattern {pattern!r}: {str(exc).splitlines()[0]}") from None
    out = Extraction(name, pattern)
    for run_id, path, coord, raw, line, n in rows:
        if _number(raw) is None:
            continue
        out.rows.append((run_id, tuple(path), tuple(coord), raw, line))
        out.duplicates += n > 1
    return out


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
    """Printed values against values logged by the run or replayed, at the same coordinates."""
    logged = {}
    for run_id, path, coord, num in cat.execute(
        f"SELECT run_id, path, coord, num FROM records WHERE lower(name) = lower(?)"
        f" AND (replay_id IS NULL OR NOT starts_with(replay_id, '{PREFIX}'))",
        [ex.name],
    ).fetchall():
        logged[(run_id, tuple(path), tuple(coord))] = num
    out = Comparison()
    for run_id, path, coord, raw, _ in ex.rows:
        key = (run_id, path, coord)
        if key not in logged:
            continue
        out.compared += 1
        value, ref = float(raw), logged[key]
        if ref is None or not (math.isclose(value, ref, rel_tol=1e-9) or abs(value - ref) <= tolerance(raw) * 1.0001):
            out.disagree.append((run_id, coord, raw, ref))
    return out


# -- writing -------------------------------------------------------------------------------------


def extract(cat: Catalog, name: str, pattern: str | None = None, ex: Extraction | None = None) -> Extraction:
    """Write the printed values of ``name`` where no recorded or replayed value is, then ingest.

    Runs that logged ``name`` themselves get no extracted values (they are only
    compared). Coordinates a replay already filled keep the replayed value.
    """
    from flordb.record.context import Blocks
    from flordb.store.segments import SegmentWriter, write_json_atomic

    ex = ex or scan(cat, name, pattern)
    ex.comparison = compare(cat, ex)
    recorded = {r[0] for r in cat.execute(
        "SELECT DISTINCT run_id FROM log_names WHERE lower(name) = lower(?) AND NOT replayed", [name]).fetchall()}
    filled = {(r, tuple(p), tuple(c)) for r, p, c in cat.execute(
        f"SELECT run_id, path, coord FROM records WHERE lower(name) = lower(?) AND replay_id IS NOT NULL"
        f" AND NOT starts_with(replay_id, '{PREFIX}')", [name]).fetchall()}
    by_run: dict[str, list[tuple]] = {}
    for row in ex.rows:
        run_id = row[0]
        if run_id in recorded:
            ex.skipped[run_id] = "the run logged it itself"
        elif (run_id, row[1], row[2]) not in filled:
            by_run.setdefault(run_id, []).append(row)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    statement = json.dumps({name: f"console: {ex.pattern}"})
    for run_id, rows in by_run.items():
        replay_id = f"{PREFIX}{stamp}-{secrets.token_hex(3)}"
        run_dir = cat.layout.run_dir(f"x{replay_id[len(PREFIX):]}-{run_id}")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "run.json", {
            "run_id": run_dir.name, "mode": "extract", "replay_of": run_id, "replay_id": replay_id,
            "started": time.time(), "script": None, "version": None})
        blocks, bases, logs = Blocks(), {}, []
        for _, path, coord, raw, _ in rows:
            if path:
                key = (path, coord[:-1])
                if key not in bases:
                    bases[key] = blocks.open(path, coord[:-1])
                ctx = bases[key] + coord[-1]
            else:
                ctx = 0
            logs.append((name, float(raw), ctx))
        SegmentWriter(run_dir).write(logs, [], [], blocks.table)
        write_json_atomic(run_dir / "end.json", {"status": "finished", "ended": time.time(), "error": None})
        ex.written[run_id] = replay_id
    cat.ingest()
    for run_id, replay_id in ex.written.items():
        iterations = sorted({row[2][0] for row in by_run[run_id] if row[2]})
        cat.record_replay(
            replay_id=replay_id, run_id=run_id, names=[name], version=None, statement=statement,
            strategy="extract", iterations=_ranges(iterations), seconds=0.0, estimate=0.0,
            status="extracted", fidelity=None,
        )
    return ex


def _ranges(its: list[int]) -> str:
    from flordb.hindsight.api import _ranges as ranges

    return ranges(its)


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
        say(f"{n}: {len(ex.rows)} values extracted from {len(ex.written)} run(s) (provenance: {PREFIX}...).")
        if ex.comparison and ex.comparison.compared:
            say(ex.comparison.summary(n))
    return done
