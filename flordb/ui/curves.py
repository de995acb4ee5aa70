"""Curves for the browser: one line per run, downsampled in DuckDB.

A line of N points drawn B pixels wide needs at most two points per pixel
bucket: the minimum and the maximum (M4-style), so a spike one step wide stays
visible while a run of 10,000 steps travels as at most ``2 * buckets`` points.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    names = table.column_names
    has_prov = len(names) > len(loops) + 2
    # Runs as small integers (dictionary indices): grouping on (run, bucket) as one BIGINT is
    # several times faster than on (text, bucket).
    runs = pc.dictionary_encode(table.column("run_id")).combine_chunks()
    cols = {"r": runs.indices, **{f"l{i}": table.column(l) for i, l in enumerate(loops)},
            "y": table.column(names[len(loops) + 1])}
    if has_prov:
        cols["p"] = pc.is_valid(table.column(names[-1]))
    if x == "global" or not loops:
        cols["g"] = global_steps(runs.indices, [table.column(l) for l in loops])
        xs = "g"
    else:
        xs = f"l{loops.index(x)}"
    t = pa.table(cols)
    rng = [f"x >= {float(x0)!r}"] if x0 is not None else []
    rng += [f"x <= {float(x1)!r}"] if x1 is not None else []
    where = " AND ".join(["isfinite(y)", *rng])
    prov, p1, p2 = ("p", ", arg_min(p, y) AS p1", ", arg_max(p, y) AS p2") if has_prov else ("false", "", "")
    sql = f"""
    WITH base AS MATERIALIZED (SELECT * FROM (SELECT r, CAST({xs} AS DOUBLE) AS x, CAST(y AS DOUBLE) AS y,
                                                     {prov} AS p FROM t) WHERE {where}),
    stats AS MATERIALIZED (SELECT r, count(*) AS n, min(x) AS lo, max(x) AS hi FROM base GROUP BY r),
    big AS MATERIALIZED (
        SELECT k, arg_min(x, y) AS x1, min(y) AS y1{p1}, arg_max(x, y) AS x2, max(y) AS y2{p2}
        FROM (SELECT r * {buckets} + CAST(least(floor((x - lo) * {buckets} / greatest(hi - lo, 1e-300)),
                                                {buckets - 1}) AS BIGINT) AS k, x, y, p
              FROM base JOIN stats USING (r) WHERE n > {2 * buckets})
        GROUP BY k)
    SELECT r, x, y, p FROM base JOIN stats USING (r) WHERE n <= {2 * buckets}
    UNION ALL SELECT k // {buckets}, x1, y1, {"p1" if has_prov else "false"} FROM big
    UNION ALL SELECT k // {buckets}, x2, y2, {"p2" if has_prov else "false"} FROM big WHERE x2 <> x1
    ORDER BY 1, 2
    """
    with flor.scratch(t=t) as db:
        out = db.sql(sql).to_arrow_table()
    run_ids = pc.take(runs.dictionary, out.column(0))
    return pa.table({"run_id": run_ids, "x": out.column(1), "y": out.column(2), "replayed": out.column(3)})

def global_steps(runs: pa.Array, loops: list[pa.ChunkedArray]) -> np.ndarray:
    """Each row's position within its run, in loop-coordinate order: a step counted across epochs."""
    r = runs.to_numpy(zero_copy_only=False)
    keys = [np.asarray(c.to_numpy()) for c in reversed(loops)] + [r]
    order = np.lexsort(keys)
    counts = np.bincount(r, minlength=int(r.max()) + 1 if len(r) else 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    g = np.empty(len(r), dtype=np.int64)
    g[order] = np.arange(len(r)) - starts[r[order]]
    return g


def curves(layout, y: str, runs: list[str], x: str | None = None, buckets: int = MAX_BUCKETS,
           x0: float | None = None, x1: float | None = None, schema=None) -> dict:
    """One panel of the Curves page: a log column, one downsampled line per run.

    ``x`` that the column's loops do not offer falls back to its default.
    """
    sch = schema
    if sch is None:
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
    if x not in choices:
        x = "global" if len(loops) != 1 else loops[0]
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
        if rv:
            line["replayed"].append(len(line["x"]))  # indices of replayed points
        line["x"].append(xv)
        line["y"].append(yv)
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
