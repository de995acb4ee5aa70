"""Curves for the browser: one line per run, downsampled in DuckDB.

A line of N points drawn B pixels wide needs at most two points per pixel
bucket: the minimum and the maximum (M4-style), so a spike one step wide stays
visible while a run of 10,000 steps travels as at most ``2 * buckets`` points.
"""

from __future__ import annotations

import base64

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from flordb.errors import QueryError
from flordb.ui import flor

MAX_BUCKETS = 1000  # so at most 2,000 points per line


def m4_sql(source: exp.Expression, loops: list[str], x: str, y: str, provenance: str | None, buckets: int,
           x0: float | None = None, x1: float | None = None, runs: list[str] | None = None) -> str:
    """One query: ``(run_id, x, y, replayed, total)``, at most ``2 * buckets`` rows per run, ordered by run and x.

    ``total`` summed over a run's rows is the number of values it drew from.

    ``source`` is ``logs`` (through the query API, so the catalog's rows never leave DuckDB)
    or any table with ``run_id``, the loop columns and ``y``. ``x`` is a loop name, or
    "global": a step counted across the loop levels, the innermost coordinate plus
    the steps of the iterations before it (epoch 2, step 5 of 40-step epochs: 85;
    an iteration's steps as far as the column's values show: its last step + 1).
    That is a grouped sum, not a row number: no sort of every row.
    Each run keeps, per bucket of the x range (one bucket per pixel), the minimum and the
    maximum (M4-style): a spike one step wide stays visible.
    """
    buckets = max(1, min(int(buckets), MAX_BUCKETS))
    q = lambda c: exp.to_identifier(c, quoted=True).sql("duckdb")  # noqa: E731
    run = q("run_id")
    cond = exp.column(exp.to_identifier(y, quoted=True)).is_(exp.null()).not_()
    if runs:
        cond = exp.and_(exp.column(exp.to_identifier("run_id", quoted=True)).isin(
            *(exp.Literal.string(r) for r in runs)), cond)
    prov = f"{q(provenance)} IS NOT NULL" if provenance else "false"
    cols = ", ".join([run, *(q(l) for l in loops)])
    src = (f"src AS (SELECT {cols}, CAST({q(y)} AS DOUBLE) AS __y, {prov} AS __p"
           f" FROM {source.sql('duckdb')} WHERE {cond.sql('duckdb')})")
    if x in loops and x != "global":
        ctes = [src, f"base AS (SELECT {run} AS r, CAST({q(x)} AS DOUBLE) AS x, __y AS y, __p AS p FROM src)"]
    elif len(loops) >= 2:  # global: offset of the enclosing iteration + the innermost coordinate
        outer, inner = ", ".join(q(l) for l in loops[:-1]), q(loops[-1])
        ctes = [src,
                f"offs AS (SELECT {run}, {outer}, coalesce(sum(max({inner}) + 1) OVER (PARTITION BY {run} ORDER BY"
                f" {outer} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS __off"
                f" FROM src GROUP BY {run}, {outer})",
                f"base AS (SELECT {run} AS r, CAST(__off + {inner} AS DOUBLE) AS x, __y AS y, __p AS p"
                f" FROM src JOIN offs USING ({run}, {outer}))"]
    else:  # one loop level, or none: the row's position in its run
        order = f" ORDER BY {q(loops[0])}" if loops else ""
        ctes = [src, f"base AS (SELECT {run} AS r, CAST(row_number() OVER (PARTITION BY {run}{order}) - 1 AS DOUBLE)"
                     f" AS x, __y AS y, __p AS p FROM src)"]
    keep = ["isfinite(y)"]
    keep += [f"x >= {float(x0)!r}"] if x0 is not None else []
    keep += [f"x <= {float(x1)!r}"] if x1 is not None else []
    keep_sql = " AND ".join(keep)
    # no provenance column: every point is recorded, and two aggregates over every row are saved
    p1, p2 = ("arg_min(p, y)", "arg_max(p, y)") if provenance else ("false", "false")
    lo = f"CAST({float(x0)!r} AS DOUBLE)" if x0 is not None else "NULL"
    hi = f"CAST({float(x1)!r} AS DOUBLE)" if x1 is not None else "NULL"
    # Buckets split the x range all lines share (the plot's width), so a short run spans few of
    # them; a bucket holding one value keeps it as it is.
    return f"""
    WITH {", ".join(ctes)},
    kept AS (SELECT r, x, y, p FROM base WHERE {keep_sql}),
    rng AS (SELECT coalesce({lo}, min(x)) AS lo, coalesce({hi}, max(x)) AS hi FROM kept),  -- one row
    big AS (SELECT r, k, count(*) AS c, arg_min(x, y) AS x1, min(y) AS y1, {p1} AS p1,
                   arg_max(x, y) AS x2, max(y) AS y2, {p2} AS p2
            FROM (SELECT r, least(floor((x - lo) * {buckets} / greatest(hi - lo, 1e-300)), {buckets - 1}) AS k,
                         x, y, p FROM kept, rng)
            GROUP BY r, k)
    SELECT r AS run_id, x1 AS x, y1 AS y, p1 AS replayed, c AS total FROM big
    UNION ALL SELECT r, x2, y2, p2, 0 FROM big WHERE x2 <> x1
    ORDER BY 1, 2
    """


def downsample(table: pa.Table, loops: list[str], x: str, buckets: int,
               x0: float | None = None, x1: float | None = None) -> pa.Table:
    """``m4_sql`` over an Arrow table ``(run_id, <loops>, y[, provenance])`` in a scratch DuckDB."""
    names = table.column_names
    y = names[len(loops) + 1]
    provenance = names[-1] if len(names) > len(loops) + 2 else None
    with flor.scratch(t=table) as db:
        return db.sql(m4_sql(exp.to_table("t"), loops, x, y, provenance, buckets, x0, x1)).to_arrow_table()


ENCODINGS = ("json", "f64")


def columnar_lines(small: pa.Table, encoding: str = "json") -> dict[str, dict]:
    """One ``{run_id, x, y, replayed: [indices]}`` per run of ``m4_sql``'s output.

    Sliced with numpy at the run boundaries (the rows come ordered by run), so the cost
    is one conversion per line, not per point. ``x`` and ``y`` are JSON lists (integral x
    values as integers), or with ``encoding="f64"`` the base64 of little-endian float64
    arrays, which the page reads as a ``Float64Array`` with no parsing of numbers on
    either side (the page's own requests use it; scripts get lists).
    """
    if encoding not in ENCODINGS:
        raise QueryError(f"encoding {encoding!r}: choose one of {', '.join(ENCODINGS)}")
    n = small.num_rows
    if n == 0:
        return {}
    run_ids = small.column("run_id").combine_chunks()
    x = small.column("x").to_numpy().astype("<f8")
    y = small.column("y").to_numpy().astype("<f8")
    if encoding == "json":
        if np.all(np.isfinite(x)) and np.all(x == np.round(x)) and np.abs(x).max() < 2 ** 53:
            x = x.astype(np.int64)
        enc = lambda a: a.tolist()  # noqa: E731
    else:
        enc = lambda a: base64.b64encode(a.tobytes()).decode("ascii")  # noqa: E731
    rep = small.column("replayed").to_numpy(zero_copy_only=False).astype(bool)
    totals = small.column("total").to_numpy()
    ids = pc.dictionary_encode(run_ids).indices.to_numpy()
    cuts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), n]
    out = {}
    for a, b in zip(cuts[:-1], cuts[1:]):
        run_id = run_ids[a].as_py()
        out[run_id] = {"run_id": run_id, "x": enc(x[a:b]), "y": enc(y[a:b]), "n": b - a,
                       "replayed": np.flatnonzero(rep[a:b]).tolist(), "total": int(totals[a:b].sum())}
    return out


def curves(layout, y: str, runs: list[str], x: str | None = None, buckets: int = MAX_BUCKETS,
           x0: float | None = None, x1: float | None = None, schema=None, encoding: str = "json") -> dict:
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
    small = flor.query_table(m4_sql(exp.to_table("logs"), loops, x, y, provenance, buckets, x0, x1, runs), layout)
    lines = columnar_lines(small, encoding)
    total = sum(line.pop("total") for line in lines.values())
    order = runs or sorted(lines)
    return {
        "y": y, "x": x, "x_choices": choices, "encoding": encoding, "rows": total, "buckets": min(buckets, MAX_BUCKETS),
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
