"""Choosing each side's run, reading its values, and parsing the names to compare."""

from __future__ import annotations

import difflib
import math
import re
import sys
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from flordb.comparison.result import Side
from flordb.errors import CompareError, QueryError, UnknownColumnError
from flordb.store.segments import BOOL, FLOAT, INT, NULL

_ID_LIKE = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_NUMERIC_VTYPES = {NULL, FLOAT, INT, BOOL}


# ------------------------------------------------------------------ selecting sides


def _check_tolerance(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CompareError(f"--{name} must be a number, got {value!r}") from None
    if math.isnan(v) or v < 0:
        raise CompareError(f"--{name} must be a non-negative number, got {value!r}")
    return v


def _run_list(rows: Sequence[tuple], limit: int = 6) -> str:
    shown = [f"{r[0]} (version {(r[1] or '?')[:7]}, {r[2] or '?'})" for r in rows[:limit]]
    more = f", and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(shown) + more


def _ambiguous(label: str, spec: str, rows: Sequence[tuple]) -> CompareError:
    return CompareError(
        f"side {label} ({spec!r}) selects {len(rows)} runs: {_run_list(rows)};"
        f" narrow it to one run, e.g. with a longer run id prefix or \"run_id = '{rows[-1][0]}'\""
    )


def resolve_side(cat, spec: str, label: str) -> Side:
    """The one recorded run ``spec`` selects: run id (prefix), version (prefix) or predicate."""
    text = (spec or "").strip()
    if not text:
        raise CompareError(f"side {label} is empty: give a run id, a version, or a predicate such as \"lr = 0.01\"")
    runs = cat.execute(
        "SELECT run_id, version, script FROM runs WHERE mode = 'record' ORDER BY started, run_id"
    ).fetchall()
    from flordb.sql.runs import find_runs

    named = find_runs(cat, text)  # an id or a part of it, HEAD~n, a name or tag, a version prefix
    if len(named) == 1:
        return Side(label, text, *named[0])
    if _ID_LIKE.match(text):
        exact = [r for r in runs if r[0] == text]
        if exact:
            return Side(label, text, *exact[0])
        low = text.lower()
        hits = [r for r in runs if r[0].startswith(text) or (r[1] or "").startswith(low)]
        if len(hits) == 1:
            return Side(label, text, *hits[0])
        if len(hits) > 1:
            raise _ambiguous(label, text, hits)
        if not runs:
            raise CompareError(f"side {label}: no run matches {text!r}: no run has been recorded in this project yet")
        latest = ", ".join(r[0] for r in runs[-3:])
        raise CompareError(
            f"side {label}: no run id or version starts with {text!r} (latest runs: {latest}; see `flordb runs`)"
        )
    rows = _predicate_runs(cat, text, label)
    if not rows:
        raise CompareError(f"side {label}: no recorded run satisfies {text!r}")
    if len(rows) > 1:
        raise _ambiguous(label, text, rows)
    return Side(label, text, *rows[0])


def _predicate_runs(cat, text: str, label: str) -> list[tuple]:
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    from flordb.sql.engine import prepare, run_plan
    from flordb.sql.logs import col

    try:
        trees = [t for t in sqlglot.parse(text, read="duckdb") if t is not None]
    except SqlglotError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompareError(
            f"side {label}: {text!r} is neither a run id, a version nor a SQL predicate ({first})"
        ) from None
    if len(trees) != 1 or not isinstance(trees[0], exp.Condition):
        raise CompareError(
            f"side {label}: {text!r} is not a predicate; write one condition over run or arg columns,"
            " e.g. \"lr = 0.01\" or \"version = 'a81c0d2...'\""
        )
    lead = ["run_id", "version", "script", "tstamp"]
    select = (
        exp.select(*(col(c) for c in lead)).distinct().from_("logs").where(trees[0])
        .order_by(col("tstamp"), col("run_id"))
    )
    try:
        plan, _ = prepare(cat, select)
        df = run_plan(cat, plan)
    except UnknownColumnError as exc:
        parts = []
        for n in exc.names:
            close = exc.suggestions.get(n) or []
            parts.append(f"{n!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        raise CompareError(f"side {label} ({text!r}): unknown column {', '.join(parts)}") from None
    except QueryError as exc:
        raise CompareError(f"side {label} ({text!r}): {exc.message}") from None
    seen: dict[str, tuple] = {}
    for r in df.itertuples(index=False):
        seen.setdefault(r.run_id, (r.run_id, r.version, r.script))
    return list(seen.values())


# ------------------------------------------------------------------ reading values


def _log_names(cat, run_id: str) -> list[str]:
    """The names a run logged, in the order it first logged them."""
    rows = cat.execute(
        "SELECT name FROM records WHERE run_id = ? GROUP BY name"
        " ORDER BY min(seq) FILTER (WHERE replay_id IS NULL) NULLS LAST, min(seq), name", [run_id]
    ).fetchall()
    return [r[0] for r in rows]


def _decode(vtype: int, num: float | None, txt: str | None) -> Any:
    if vtype in (FLOAT, INT, BOOL):
        return float(num) if num is not None else None
    if vtype == NULL:
        return None
    return txt


def _read_side(cat, run_id: str, names: Sequence[str]) -> dict[str, dict[tuple, pd.DataFrame]]:
    """name -> loop path -> frame (a column per loop, value, seq), one row per coordinate.

    A value logged twice at one coordinate counts once (the last, as in
    ``logs``); a recorded value wins over a replayed one.
    """
    if not names:
        return {}
    df = cat.execute(
        "SELECT name, path, coord, vtype, num, txt, seq, replay_id IS NULL AS original"
        " FROM records WHERE run_id = ? AND list_contains(?, name)",
        [run_id, list(names)],
    ).df()
    out: dict[str, dict[tuple, pd.DataFrame]] = {}
    if df.empty:
        return out
    df["path"] = [tuple(p) if p is not None else () for p in df["path"]]
    df["coord"] = [tuple(int(c) for c in cs) if cs is not None else () for cs in df["coord"]]
    df = df.sort_values(["original", "seq"], kind="stable").drop_duplicates(["name", "path", "coord"], keep="last")
    for (name, path), g in df.groupby(["name", "path"], sort=False):
        coords = list(g["coord"])
        data = {loop: [c[d] if d < len(c) else None for c in coords] for d, loop in enumerate(path)}
        vtypes = g["vtype"].to_numpy()
        if np.isin(vtypes, list(_NUMERIC_VTYPES)).all():  # the common case, without a Python loop
            data["value"] = np.where(vtypes == NULL, np.nan, g["num"].to_numpy(dtype=float))
        else:
            data["value"] = [_decode(int(v), n, t) for v, n, t in zip(vtypes, g["num"], g["txt"])]
        data["seq"] = g["seq"].to_numpy(dtype=float)
        frame = pd.DataFrame(data)
        frame = frame.sort_values(list(path) or ["seq"], kind="stable").reset_index(drop=True)
        out.setdefault(name, {})[path] = frame
    return out


def _pair_paths(pa: Sequence[tuple], pb: Sequence[tuple]) -> list[tuple[tuple | None, tuple | None]]:
    pairs: list[tuple[tuple | None, tuple | None]] = [(p, p) for p in pa if p in pb]
    rest_a = [p for p in pa if p not in pb]
    rest_b = [p for p in pb if p not in pa]
    if len(rest_a) == 1 and len(rest_b) == 1:
        return pairs + [(rest_a[0], rest_b[0])]
    return pairs + [(p, None) for p in rest_a] + [(None, p) for p in rest_b]


def _empty(path: tuple) -> pd.DataFrame:
    return pd.DataFrame({**{l: pd.Series([], dtype="Int64") for l in path}, "value": [], "seq": []})


# ------------------------------------------------------------------ names


def _parse_on(on: str | Iterable[str] | None) -> list[str] | None:
    if on is None:
        return None
    items = on.split(",") if isinstance(on, str) else list(on)
    names = [str(n).strip() for n in items if str(n).strip()]
    if not names:
        raise CompareError("--on names no log name: give names separated by commas, e.g. --on loss,acc")
    return list(dict.fromkeys(names))


def parse_map(items: str | Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``{"loss": "train_loss"}`` from a mapping, ``"loss=train_loss,acc=val_acc"`` or a list of such."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        texts = [items] if isinstance(items, str) else list(items)
        pairs = []
        for text in texts:
            for part in str(text).split(","):
                if not part.strip():
                    continue
                left, sep, right = part.partition("=")
                if not sep:
                    raise CompareError(f"--map {part.strip()!r}: expected NAME_A=NAME_B, e.g. --map loss=train_loss")
                pairs.append((left, right))
    out: dict[str, str] = {}
    for left, right in pairs:
        left, right = str(left).strip(), str(right).strip()
        if not left or not right:
            raise CompareError(f"--map {left}={right}: expected NAME_A=NAME_B with both names given")
        if left in out and out[left] != right:
            raise CompareError(f"--map maps {left!r} twice ({out[left]!r} and {right!r})")
        out[left] = right
    return out


def _strip_prefix(name: str, known: Iterable[str]) -> str:
    """Accept ``log.epoch`` (the ``logs`` column of a log named like a loop) for the log name."""
    known = set(known)
    if name not in known and name.startswith("log.") and name[4:] in known:
        return name[4:]
    return name


def _fill_by_replay(cat, names: Sequence[str], a: Side, b: Side, mode: str) -> bool:
    """Hindsight for a comparison: replay names the current code logs into the two runs.

    The catalog is closed while the workers run, then reopened and re-ingested.
    Without a terminal to ask on and without --yes, nothing is replayed.
    """
    from sqlglot import exp

    from flordb.hindsight.api import ConfirmationRequired, replay, say
    from flordb.hindsight.plan import locate_statements

    if mode == "ask" and not sys.stdin.isatty():
        return False  # nobody to ask: the error that follows says which command fills them
    logged = [n for n in names if n in locate_statements(cat.layout.work_tree, list(names))]
    if not logged:
        return False
    where = exp.In(this=exp.column("run_id"), expressions=[exp.Literal.string(s.run_id) for s in (a, b)])
    cat.close()
    try:
        report = replay(logged, where=where, layout=cat.layout, only_missing=True,
                        confirm_mode=mode)
    except ConfirmationRequired as exc:
        say(f"{exc.message}.")
        return False
    finally:
        cat.open()
        cat.ingest()
    return bool(report.results)


def _never_recorded(names: Sequence[str], a: Side, b: Side, shared: Sequence[str], layout) -> CompareError:
    from flordb.hindsight.locate import find_log_statements

    hits: dict[str, list[str]] = {}
    scripts = list(dict.fromkeys(s for s in (a.script, b.script) if s))
    for script in scripts:
        path = layout.work_tree / script
        try:
            source = path.read_text()
        except OSError:
            continue
        for n in names:
            for stmt in find_log_statements(source, n):
                hits.setdefault(n, []).append(f"{script}:{stmt.lineno}")
    parts = []
    for n in names:
        runs = f"run {a.run_id}" if a.run_id == b.run_id else f"run {a.run_id} or run {b.run_id}"
        if n in hits:
            ids = ", ".join(f"'{r}'" for r in dict.fromkeys([a.run_id, b.run_id]))
            parts.append(
                f"{n!r} was never recorded by {runs}; the current code logs it ({', '.join(hits[n])}), so"
                f" hindsight replay can fill it in: run `flordb replay {n} --where \"run_id IN ({ids})\"`,"
                " then compare again"
            )
        else:
            close = difflib.get_close_matches(n, shared, n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            parts.append(f"{n!r} was never recorded by {runs} and no flor.log in the current code logs it{hint}")
    return CompareError("; ".join(parts))


