"""The JSON twins of the pages: plain functions from (layout, parameters) to dicts.

The page of the same name fetches these; tests call them through the app
without a browser. Values are made JSON-safe by the results' one encoder
(``flordb.tabular.plain``), with JavaScript's spelling of NaN and infinities.
"""

from __future__ import annotations

import difflib
import math
import time
from typing import Any

import pyarrow as pa
from sqlglot import exp

from flordb.errors import FlorError, QueryError, UnknownColumnError
from flordb.tabular import plain
from flordb.ui import flor
from flordb.ui import curves as curves_mod
from flordb.ui.curves import check_predicate

MAX_ROWS = 10_000  # rows of a SQL result sent to the page
MAX_DIFF_LINES = 2_000


JS_NONFINITE = ("NaN", "Infinity", "-Infinity")  # as JavaScript's Number() reads them back


def jsonable(v: Any) -> Any:
    """A value for the page: the results' one JSON encoder, with JavaScript's spelling of NaN and infinities."""
    return plain(v, JS_NONFINITE)


def numeric_decimals(table: pa.Table) -> pa.Table:
    """DECIMAL columns with a fraction as doubles, so the page can sort and chart them as numbers.

    Integral ones (DuckDB's HUGEINT arrives as DECIMAL(38,0)) stay exact: the encoder makes them ints.
    """
    cols = [c.cast(pa.float64()) if pa.types.is_decimal(c.type) and c.type.scale > 0 else c
            for c in table.columns]
    return pa.table(cols, names=table.column_names)


# -- runs ----------------------------------------------------------------------------------


def run_details(layout) -> tuple[dict[str, str], dict[str, dict], list[str]]:
    """(full version by run, typed args by run, arg names in first-seen order)."""
    with flor.catalog(layout) as cat:
        return _details(cat)


def _details(cat) -> tuple[dict[str, str], dict[str, dict], list[str]]:
    versions = dict(flor.rows(cat, "SELECT run_id, version FROM runs"))
    rows = flor.rows(cat, "SELECT run_id, name, vtype, num, txt FROM args ORDER BY rowid")
    args: dict[str, dict] = {}
    names: list[str] = []
    for run_id, name, vtype, num, txt in rows:
        args.setdefault(run_id, {})[name] = flor.decode(vtype, num, txt)
        if name not in names:
            names.append(name)
    return versions, args, names


def columns(layout) -> dict:
    """The columns of ``logs`` by kind, for pickers and completion."""
    with flor.catalog(layout) as cat:
        return _columns(flor.schema(cat))


def _columns(sch) -> dict:
    out: dict[str, list] = {"run": [], "loop": [], "arg": [], "log": [], "provenance": []}
    for c in sch.columns.values():
        out.setdefault(c.kind, []).append({"name": c.name, "type": c.type, "paths": [list(p) for p in c.paths]})
    return out


def curves_page(layout, ys: list[str], runs: list[str], x: str | None = None, width: int = 1000,
                x0: float | None = None, x1: float | None = None, encoding: str = "json") -> dict:
    """The JSON twin of the Curves page: one panel per log column in ``ys``.

    No runs: the ten latest. No ``ys``: the log column of the deepest loop. Names that are not
    log columns come back under ``missing`` (the page then asks ``sql.json`` for
    a replay plan).
    """
    with flor.catalog(layout) as cat:
        sch = flor.schema(cat)
        versions, args, arg_names = _details(cat)
        gen = news(cat)
        status = dict(flor.rows(cat, "SELECT run_id, status FROM runs"))
        if not runs:
            runs = [r for (r,) in cat.execute(
                "SELECT run_id FROM runs WHERE mode = 'record' ORDER BY started DESC, run_id DESC LIMIT 10"
            ).fetchall()][::-1]
    cols = _columns(sch)
    logs = {c["name"] for c in cols["log"]}
    if not ys and cols["log"]:  # the per-step metric (deepest loop) by default, as a person would pick
        ys = [min(cols["log"], key=lambda c: (-max((len(p) for p in c["paths"]), default=0), c["name"]))["name"]]
    missing = [y for y in ys if y not in logs]
    panels = [curves_mod.curves(layout, y, runs, x, width, x0, x1, schema=sch, encoding=encoding)
              for y in ys if y in logs]
    meta = {r: {"version": versions.get(r), "status": status.get(r), "args": jsonable(args.get(r, {}))}
            for r in runs}
    return {"panels": panels, "missing": missing, "run_ids": runs, "runs": meta, "args": arg_names,
            "columns": cols, "generation": gen}


def last_values(layout, metric: str) -> dict[str, Any]:
    """The last value of a log column per run, in loop order."""
    with flor.catalog(layout) as cat:
        sch = flor.schema(cat)
    col = sch.columns.get(metric)
    if col is None or col.kind != "log":
        raise QueryError(f"{metric!r} is not a log column")
    path = max(col.paths, key=len) if col.paths else ()
    order = ", ".join(flor.ident_sql(l) for l in path if l in sch.columns) or flor.ident_sql("tstamp")
    m = flor.ident_sql(metric)
    sql = f"SELECT run_id, last({m} ORDER BY {order}) AS v FROM logs WHERE {m} IS NOT NULL GROUP BY run_id"
    t = flor.query_table(sql, layout)
    return dict(zip(t.column("run_id").to_pylist(), (jsonable(v) for v in t.column("v").to_pylist())))


PAGE_SIZE = 200  # rows of the Runs page at a time
SORTABLE = ("run_id", "name", "tags", "status", "version", "script", "started", "seconds", "metric")


def sort_runs(rows: list[dict], key: str, desc: bool) -> list[dict]:
    """Rows ordered by a column, an arg (``arg:lr``) or the chosen metric; empty values last either way."""
    if key not in SORTABLE and not key.startswith("arg:"):
        raise QueryError(f"cannot sort by {key!r}: use a column ({', '.join(SORTABLE)}) or arg:NAME")

    def value(r):
        return r["args"].get(key[4:]) if key.startswith("arg:") else r.get(key)

    def rank(v):  # numbers before text, so a column of mixed types still sorts
        if isinstance(v, (bool, int, float)) and not (isinstance(v, float) and math.isnan(v)):
            return (0, float(v), "")
        return (1, 0.0, str(v))

    present = [r for r in rows if value(r) not in (None, "", "NaN")]
    empty = [r for r in rows if value(r) in (None, "", "NaN")]
    return sorted(present, key=lambda r: rank(value(r)), reverse=desc) + empty


def runs(layout, where: str | None = None, metric: str | None = None, status: str | None = None,
         sort: str = "started", desc: bool = True, offset: int = 0, limit: int = PAGE_SIZE) -> dict:
    """The JSON twin of the Runs page: filtered, sorted and paged here, so a page shows ``limit`` rows at a time."""
    listing = flor.list_runs(layout)
    with flor.catalog(layout) as cat:  # one open for the details and the columns
        versions, args, arg_names = _details(cat)
        cols = _columns(flor.schema(cat))
        gen = news(cat)
    keep = None
    if where and where.strip():
        cond = check_predicate(where)
        sel = exp.select(exp.column(exp.to_identifier("run_id", quoted=True))).distinct().from_("logs").where(cond)
        keep = set(flor.query_table(sel.sql(dialect="duckdb"), layout).column("run_id").to_pylist())
    last = last_values(layout, metric) if metric else {}
    out = []
    for rec in listing:
        run_id = rec["run_id"]
        if keep is not None and run_id not in keep:
            continue
        if status and rec.get("status") != status:
            continue
        out.append({
            "run_id": run_id, "name": rec.get("name") or "", "tags": rec.get("tags") or "",
            "note": rec.get("note") or "", "version": versions.get(run_id) or "", "script": rec.get("script"),
            "status": rec.get("status"), "started": jsonable(rec.get("started")),
            "seconds": jsonable(rec.get("seconds")), "error": rec.get("error") or "",
            "args": jsonable(args.get(run_id, {})), **({"metric": last.get(run_id)} if metric else {}),
        })
    out = sort_runs(out, sort or "started", desc)
    offset, limit = max(0, int(offset)), max(1, int(limit))
    return {"runs": out[offset:offset + limit], "count": len(out), "offset": offset, "limit": limit,
            "sort": sort or "started", "desc": desc, "args": arg_names, "metric": metric, "where": where or "",
            "total": len(listing), "columns": cols, "generation": gen}


def tag(layout, run_id: str, tag: str, remove: bool = False, kind: str = "tag") -> dict:
    """Add (or remove) a tag or the name of a run; answers with the run's labels as the Runs page shows them."""
    if kind not in ("tag", "name"):
        raise QueryError(f"cannot edit a run's {kind!r}: tag or name")
    run_id = flor.label_run(layout, run_id, kind, tag, remove)
    rec = next((r for r in flor.list_runs(layout) if r["run_id"] == run_id), {})
    return {"run_id": run_id, "name": rec.get("name") or "", "tags": rec.get("tags") or ""}


_WATCH: dict[str, tuple] = {}  # store -> (disk fingerprint, generation, when, run dirs still being written)
RECHECK = 10.0  # seconds: look in the catalog at least this often (a silent run turns interrupted)


def generation(layout) -> list:
    """The catalog's change generation: it moves on new records, runs, tags, replays.

    Called twice a second per open page, so it opens the catalog (and ingests) only when
    the disk says something changed: the catalog file, the list of runs, or the directory
    of a run still being written (a new segment, its end).
    """
    key = str(layout.home)
    seen = _WATCH.get(key)
    if seen is not None:
        fp = fingerprint(layout, seen[3])
        if fp == seen[0] and time.monotonic() - seen[2] < RECHECK:
            return seen[1]
    with flor.catalog(layout) as cat:
        gen = news(cat)
        live = [r for (r,) in cat.execute("SELECT run_id FROM runs WHERE NOT complete").fetchall()]
    _WATCH[key] = (fingerprint(layout, live), gen, time.monotonic(), live)
    return gen


def news(cat) -> list[str]:
    """What a page shows, in a few numbers: records, runs and their statuses, labels, replays.

    Not the catalog's write counter, which also moves whenever a live run is looked at
    (its row is refreshed): a page would then reload for nothing, over and over.
    """
    return [str(v) for v in flor.rows(
        cat, "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM runs),"
        " (SELECT coalesce(hash(string_agg(run_id || ':' || coalesce(status, ''), ',' ORDER BY run_id)), 0) FROM runs),"
        " (SELECT coalesce(hash(string_agg(run_id || kind || value, ',' ORDER BY run_id, kind, value)), 0)"
        "  FROM run_labels), (SELECT count(*) FROM replays)")[0]]


def fingerprint(layout, live: list[str]) -> tuple:
    def mtime(path) -> int:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return 0

    cat = layout.catalog
    return (mtime(cat), mtime(cat.with_name(cat.name + ".wal")), mtime(layout.segments),
            *(mtime(layout.segments / r) for r in live))


# -- SQL -----------------------------------------------------------------------------------


def sql(layout, query: str) -> dict:
    """The JSON twin of the SQL page: rows, or the replay plan for columns no run recorded."""
    if not query or not query.strip():
        return {"query": "", "columns": [], "rows": []}
    try:
        table = flor.query_table(query, layout)
    except UnknownColumnError as err:
        found = flor.locate_statements(layout, err.names)
        if set(found) != set(err.names):
            return {"query": query, "error": err.message, "missing": err.names}
        where = flor.where_of(query)
        return {"query": query, "missing": err.names, "plan": plan_json(flor.plan_replay(layout, err.names, where)),
                "where": where}
    names = table.column_names
    n = table.num_rows
    table = numeric_decimals(table.slice(0, MAX_ROWS))
    cols = [table.column(i).to_pylist() for i in range(len(names))]
    rows = [[jsonable(c[i]) for c in cols] for i in range(table.num_rows)]
    with flor.catalog(layout) as cat:
        sch = flor.schema(cat)
    prefix = flor.replay_prefix()
    replayed = [c for c in names if prefix + c in sch.columns]
    return {"query": query, "columns": names, "types": [str(t) for t in table.schema.types], "rows": rows,
            "count": n, "truncated": n > MAX_ROWS, "replayed": replayed}


def plan_json(plan) -> dict:
    return {
        "names": plan.names,
        "statements": [{"name": s.name, "script": s.script, "lineno": s.lineno, "text": s.text.strip(),
                        "position": s.position} for s in plan.statements],
        "runs": [{"run_id": r.run_id, "version": r.version, "patched": r.patched, "strategy": r.strategy,
                  "iterations": len(r.iterations), "tasks": len(r.tasks), "estimate": round(r.estimate, 2),
                  "args": jsonable(r.args)} for r in plan.runs],
        "refused": [{"run_id": a, "version": b, "reason": c} for a, b, c in plan.refused],
        "versions": sorted({r.version for r in plan.runs}),
        "workers": plan.workers, "estimate": round(plan.estimate, 2), "text": flor.render_plan(plan),
    }


# -- compare -------------------------------------------------------------------------------


def compare(layout, run_ids: list[str]) -> dict:
    """The JSON twin of the Compare page: differing args, code diff, first divergence."""
    if len(run_ids) < 2:
        raise QueryError("compare needs two or more runs: ?runs=A,B")
    versions, args, names = run_details(layout)
    unknown = [r for r in run_ids if r not in versions]
    if unknown:
        raise QueryError(f"unknown run(s): {', '.join(unknown)}")
    differ = [n for n in names if len({repr(args.get(r, {}).get(n)) for r in run_ids}) > 1]
    same = [n for n in names if n not in differ]
    out = {
        "runs": [{"run_id": r, "version": versions[r], "args": jsonable(args.get(r, {}))} for r in run_ids],
        "args_differ": differ, "args_same": same,
        "diffs": code_diffs(layout, versions[run_ids[0]], [versions[r] for r in run_ids[1:]]),
    }
    if len(run_ids) == 2:
        try:
            c = flor.compare(layout, run_ids[0], run_ids[1])
            d = c.first_divergence
            out["divergence"] = {"agree": bool(c.agree), "compared_rows": c.compared_rows,
                                 "first": jsonable(d.as_dict()) if d else None, "text": str(d) if d else None}
        except FlorError as exc:
            out["divergence"] = {"error": exc.message}
    return out


def code_diffs(layout, base: str, others: list[str]) -> list[dict]:
    out = []
    for other in dict.fromkeys(others):
        if other == base:
            out.append({"a": base, "b": other, "files": [], "same": True})
            continue
        try:
            git_a, files_a = flor.version_files(layout, base)
            git_b, files_b = flor.version_files(layout, other)
        except FlorError as exc:
            out.append({"a": base, "b": other, "error": exc.message})
            continue
        files = []
        for path in sorted(set(files_a) | set(files_b)):
            try:
                ta = flor.read_version_file(git_a, base, path) if path in files_a else ""
                tb = flor.read_version_file(git_b, other, path) if path in files_b else ""
            except FlorError:
                continue  # not text
            if ta == tb:
                continue
            lines = list(difflib.unified_diff(ta.splitlines(), tb.splitlines(), f"a/{path}", f"b/{path}",
                                              lineterm=""))
            files.append({"path": path, "diff": "\n".join(lines[:MAX_DIFF_LINES])})
        out.append({"a": base, "b": other, "files": files, "same": not files})
    return out


def source(layout, version: str, path: str) -> dict:
    return {"version": version, "path": path, "text": flor.version_source(layout, version, path)}


def complete(layout, text: str, cursor: int | None = None) -> dict:
    cursor = len(text) if cursor is None else max(0, min(int(cursor), len(text)))
    word, items = flor.completions(text[:cursor], text, layout)
    return {"word": word, "suggestions": items[:50]}
