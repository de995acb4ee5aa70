"""Curves for the browser: one line per run, downsampled in DuckDB.

A line of N points drawn B pixels wide needs at most two points per pixel
bucket: the minimum and the maximum (M4-style), so a spike one step wide stays
visible while a run of 10,000 steps travels as at most ``2 * buckets`` points.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from flordb.errors import QueryError
from flordb.ui import flor

MAX_BUCKETS = 1000  # so at most 2,000 points per line


def curve_sql(y: str, loops: list[str], runs: list[str], provenance: str | None) -> str:
    """``SELECT run_id, <loops>, y [, replay.y] FROM logs WHERE run_id IN (...) AND y IS NOT NULL``."""
    cols = ["run_id", *loops, y] + ([provenance] if provenance else [])
    sel = exp.select(*(exp.column(exp.to_identifier(c, quoted=True)) for c in cols)).from_("logs")
    cond = exp.column(exp.to_identifier(y, quoted=True)).is_(exp.null()).not_()
    if runs:
        in_runs = exp.column(exp.to_identifier("run_id", quoted=True)).isin(*(exp.Literal.string(r) for r in runs))
        cond = exp.and_(in_runs, cond)
    return sel.where(cond).sql(dialect="duckdb")


def downsample(table: pa.Table, loops: list[str], x: str, buckets: int,
               x0: float | None = None, x1: float | None = None) -> pa.Table:
    """(run_id, x, y, replayed) with at most ``2 * buckets`` rows per run, ordered by run and x.

    ``x`` is a loop name, or "global" for a step counted across every loop
    level (row order by the loop coordinates).
    """
    buckets = max(1, min(int(buckets), MAX_BUCKETS))
    q = lambda c: exp.to_identifier(c, quoted=True).sql("duckdb")  # noqa: E731
    y = q(table.column_names[len(loops) + 1])
    prov = f"{q(table.column_names[-1])} IS NOT NULL" if len(table.column_names) > len(loops) + 2 else "false"
    if x == "global" or not loops:
        order = ", ".join(q(l) for l in loops) or "1"
        xs = f"row_number() OVER (PARTITION BY run_id ORDER BY {order}) - 1"
    else:
        xs = q(x)
    rng = []
    if x0 is not None:
        rng.append(f"x >= {float(x0)!r}")
    if x1 is not None:
        rng.append(f"x <= {float(x1)!r}")
    where = " AND ".join(["isfinite(y)", *rng])
    sql = f"""
    WITH base AS (SELECT run_id, CAST({xs} AS DOUBLE) AS x, CAST({y} AS DOUBLE) AS y, {prov} AS replayed FROM t),
    kept AS (SELECT *, count(*) OVER w AS n, min(x) OVER w AS lo, max(x) OVER w AS hi
             FROM base WHERE {where} WINDOW w AS (PARTITION BY run_id)),
    bucketed AS (SELECT *, CASE WHEN n <= {2 * buckets} THEN row_number() OVER (PARTITION BY run_id ORDER BY x)
                                ELSE least(floor((x - lo) * {buckets} / greatest(hi - lo, 1e-300)), {buckets - 1}) END AS b
                 FROM kept),
    ranked AS (SELECT *, row_number() OVER (PARTITION BY run_id, b ORDER BY y, x) AS r_min,
                         row_number() OVER (PARTITION BY run_id, b ORDER BY y DESC, x) AS r_max FROM bucketed)
    SELECT run_id, x, y, replayed FROM ranked WHERE r_min = 1 OR r_max = 1 ORDER BY run_id, x
    """
    con = duckdb.connect()
    try:
        con.register("t", table)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def curves(layout, y: str, runs: list[str], x: str | None = None, buckets: int = MAX_BUCKETS,
           x0: float | None = None, x1: float | None = None) -> dict:
    """The JSON twin of the Curves page for one log column."""
    with flor.catalog(layout) as cat:
        sch = flor.schema(cat)
    col = sch.columns.get(y)
    if col is None or col.kind != "log":
        logs = [c.name for c in sch.of_kind("log")]
        raise QueryError(f"{y!r} is not a log column; known: {', '.join(logs) or 'none yet'}")
    if col.type not in ("DOUBLE", "BIGINT", "BOOLEAN"):
        raise QueryError(f"{y!r} holds {col.type} values, not numbers: it cannot be drawn as a curve")
    path = max(col.paths, key=len) if col.paths else ()
    loops = [l for l in path if l in sch.columns and sch.columns[l].kind == "loop"]
    choices = [*loops, "global"] if len(loops) > 1 else list(loops) or ["global"]
    x = x or ("global" if len(loops) != 1 else loops[0])
    if x not in choices:
        raise QueryError(f"x must be one of {', '.join(choices)} for {y!r}")
    prov = flor.replay_prefix() + y
    provenance = prov if prov in sch.columns else None
    table = flor.query_table(curve_sql(y, loops, runs, provenance), layout)
    total = table.num_rows
    small = downsample(table, loops, x, buckets, x0, x1)
    lines: dict[str, dict] = {}
    run_ids = small.column("run_id").to_pylist()
    xs, ys, rs = (small.column(c).to_pylist() for c in ("x", "y", "replayed"))
    for run_id, xv, yv, rv in zip(run_ids, xs, ys, rs):
        line = lines.setdefault(run_id, {"run_id": run_id, "x": [], "y": [], "replayed": []})
        line["x"].append(xv)
        line["y"].append(yv)
        line["replayed"].append(bool(rv))
    order = runs or sorted(lines)
    return {
        "y": y, "x": x, "x_choices": choices, "rows": total, "buckets": min(buckets, MAX_BUCKETS),
        "lines": [lines[r] for r in order if r in lines],
    }


def parse_runs(text: str | None) -> list[str]:
    return [r for r in (text or "").split(",") if r]


def check_predicate(where: str) -> exp.Expression:
    """A filter box's text as one SQL expression (so it cannot end the statement it joins)."""
    try:
        trees = [t for t in sqlglot.parse(f"SELECT 1 WHERE {where}", read="duckdb") if t is not None]
        if len(trees) == 1 and isinstance(trees[0], exp.Select) and trees[0].args.get("where") is not None:
            return trees[0].args["where"].this
    except Exception:
        pass
    raise QueryError(f"not a SQL predicate: {where!r}")
