"""Build the ``logs`` relation for exactly the columns a query names.

Rows are one per run and loop coordinate. Names logged at the same loop path
are pivoted together; a path and the paths that are its prefixes (``epoch``
under ``epoch/step``) are joined on their shared coordinates, so an
epoch-level ``acc`` repeats on every step of its epoch; paths on different
branches (``epoch/step`` and ``epoch/eval_step``) are stacked, not crossed.
Everything is built as a sqlglot tree: names only ever become quoted
identifiers or string literals. Records are read from ``record_rows`` by name
and path ids, with one integer column per loop level, and groups join on the
integer run key (schema/022_record_layout.sql); the run's id joins last.
"""

from __future__ import annotations

import functools
from typing import Iterable

import sqlglot
from sqlglot import exp

from flordb.sql.schema import VALUE_SQL, Column, LogsSchema

Path = tuple[str, ...]


def ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(ident(name), table=ident(table) if table else None)


def raw(table: str) -> exp.Table:
    """A catalog table, schema-qualified so that a user's CTE of the same name cannot capture it."""
    return exp.table_(ident(table), db=ident("main"))


def str_array(items: Iterable[str]) -> exp.Array:
    return exp.Array(expressions=[exp.Literal.string(x) for x in items])


@functools.lru_cache(maxsize=256)
def _parsed(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="duckdb")


def fragment(sql: str) -> exp.Expression:
    """A fixed SQL snippet as a tree (parsed once per process; each caller gets its own copy)."""
    return _parsed(sql).copy()


def coord_at(i: int) -> exp.Expression:
    """Loop level ``i`` (0-based) of a stored record: c1..c4, then the ``deeper`` list."""
    return col(f"c{i + 1}") if i < 4 else fragment(f"deeper[{i - 3}]")


def value_column(group: int, name: str) -> str:
    """Internal name of log ``name``'s values within path group ``group``."""
    return f"{group}\x1f{name}"


def _eq(column: str, value: int) -> exp.EQ:
    return exp.EQ(this=col(column), expression=exp.Literal.number(value))


def _at_path(schema: LogsSchema, path: Path, cols: list[Column]) -> exp.Expression:
    """The records of ``cols`` at ``path``, by ids (literals, so row groups are skipped on their min/max)."""
    ids = sorted({schema.name_ids.get(c.source, -1) for c in cols})
    name = _eq("name_id", ids[0]) if len(ids) == 1 else exp.In(
        this=col("name_id"), expressions=[exp.Literal.number(i) for i in ids])
    return exp.and_(_eq("path_id", schema.path_ids.get(path, -1)), name)


def names_group(schema: LogsSchema, i: int, path: Path, cols: list[Column]) -> exp.Select:
    """Pivot the records at one loop path: a column per log name, a row per coordinate.

    One name with one value per coordinate in every run needs no pivot: its
    records are the rows (an order of magnitude faster on large histories).
    """
    loops = [exp.alias_(coord_at(d), ident(loop)) for d, loop in enumerate(path)]
    where = _at_path(schema, path, cols)
    if len(cols) == 1 and cols[0].kind == "log" and cols[0].unique:
        c = cols[0]
        value = exp.alias_(fragment(VALUE_SQL[c.type]), ident(value_column(i, c.name)))
        return exp.select(col("run_key"), *loops, value).from_(raw("record_rows")).where(where)
    aggs = []
    for c in cols:
        cond = _eq("name_id", schema.name_ids.get(c.source, -1))
        value = col("replay_id") if c.kind == "provenance" else fragment(VALUE_SQL[c.type])
        agg = exp.ArgMax(this=value, expression=col("seq"))
        aggs.append(exp.alias_(exp.Filter(this=agg, expression=exp.Where(this=cond)), ident(value_column(i, c.name))))
    return (
        exp.select(col("run_key"), *loops, *aggs)
        .from_(raw("record_rows"))
        .where(where)
        .group_by(col("run_key"), *(coord_at(d) for d in range(len(path))))
    )


def taken_at(schema: LogsSchema, path: Path, cols: list[Column], keys: list[str]) -> exp.Select:
    """The coordinates (``keys``: run_key and outer loops) at which ``cols`` have records at ``path``."""
    outer = [exp.alias_(coord_at(d), ident(loop)) for d, loop in enumerate(keys[1:])]
    return exp.select(col("run_key"), *outer).distinct().from_(raw("record_rows")).where(_at_path(schema, path, cols))


def loop_group(path: Path) -> exp.Select:
    """Coordinates of a loop that no requested name was logged in (from loop events)."""
    outer = [exp.alias_(fragment(f"coord[{d + 1}]"), ident(loop)) for d, loop in enumerate(path[:-1])]
    if len(path) == 1:
        last = exp.alias_(fragment("coord[1]"), ident(path[0]))
        kind = "iter"
    else:
        last = exp.alias_(fragment("unnest(range(n))"), ident(path[-1]))
        kind = "loop"
    where = exp.and_(
        exp.EQ(this=col("kind"), expression=exp.Literal.string(kind)),
        exp.EQ(this=col("path"), expression=str_array(path)),
        fragment("replay_id IS NULL"),
    )
    return (
        exp.select(col("run_key"), *outer, last).distinct()
        .from_(raw("loops")).join(raw("run_keys"), using=[ident("run_id")]).where(where)
    )


def is_prefix(a: Path, b: Path) -> bool:
    return len(a) < len(b) and b[: len(a)] == a


def join_groups(groups: dict[Path, exp.Select], taken_of: dict | None = None) -> exp.Expression:
    """One row per coordinate, at the deepest path that has it; stacked across branches.

    Each path's rows are LEFT-joined with its ancestors' on their shared
    coordinates (an epoch-level ``acc`` repeats on every step of its epoch). A
    path with descendants keeps only the coordinates that none of them has
    (ANTI JOIN), so an epoch with ``acc`` but no steps still shows once, and
    sibling branches (``epoch/step``, ``epoch/eval_step``) are stacked, never
    crossed, with no extra ancestor-only row for an epoch that one branch lacks.
    Groups are CTEs, so a group read twice is computed once; ``taken_of[path](keys)``
    gives the coordinates a group has more cheaply than the group itself (a DISTINCT
    of a few integer columns, not the pivot), where it can.
    """
    paths = sorted(groups, key=lambda p: (-len(p), p))
    names = {p: f"g{i}" for i, p in enumerate(paths)}
    parts = []
    for path in paths:
        rel: exp.Select = exp.select("*").from_(exp.to_table(ident(names[path])))
        below = [d for d in paths if is_prefix(path, d)]
        if below:
            keys = ["run_key", *path]
            taken: exp.Expression | None = None
            for d in below:
                sel = (taken_of or {}).get(d)
                sel = sel(keys) if sel else exp.select(*(col(k) for k in keys)).from_(exp.to_table(ident(names[d])))
                taken = sel if taken is None else exp.Union(this=taken, expression=sel, distinct=False)
            rel = rel.join(taken.subquery(ident("taken")), using=[ident(k) for k in keys], join_type="ANTI")
        for anc in sorted((p for p in paths if is_prefix(p, path)), key=len, reverse=True):
            using = [ident("run_key"), *(ident(x) for x in anc)]
            rel = rel.join(exp.to_table(ident(names[anc])), using=using, join_type="LEFT")
        parts.append(rel)
    union = parts[0]
    for part in parts[1:]:
        union = exp.Union(this=union, expression=part, distinct=False, by_name=True)
    out = exp.select("*").from_(union.subquery(ident("stacked")))
    for path in reversed(paths):
        out = out.with_(ident(names[path]), as_=groups[path])
    return out


def build_logs(schema: LogsSchema, names: Iterable[str]) -> exp.Select:
    """The ``logs`` relation restricted to ``names`` (all columns when empty); built once per schema and names."""
    key = tuple(dict.fromkeys(names))
    built = schema.relations.get(key)
    if built is None:
        built = schema.relations[key] = _build_logs(schema, key)
    return built.copy()


def _build_logs(schema: LogsSchema, names: Iterable[str]) -> exp.Select:
    wanted = [schema.columns[n] for n in dict.fromkeys(names) if n in schema.columns] or list(
        schema.columns.values()
    )
    logs = [c for c in wanted if c.kind in ("log", "provenance")]
    loops = [c for c in wanted if c.kind == "loop"]
    args = [c for c in wanted if c.kind == "arg"]

    by_path: dict[Path, list[Column]] = {}
    for c in logs:
        for p in c.paths:
            by_path.setdefault(p, []).append(c)
    order = sorted(by_path, key=lambda p: (len(p), p))
    groups: dict[Path, exp.Select] = {p: names_group(schema, order.index(p), p, by_path[p]) for p in order}
    taken_of = {p: functools.partial(taken_at, schema, p, by_path[p]) for p in order}
    for c in loops:
        if not any(c.name in p for p in groups):
            for p in c.paths:
                groups.setdefault(p, loop_group(p))

    run_info = (
        exp.select(col("run_id"), col("version"), exp.alias_(col("started"), ident("tstamp")), col("script"))
        .from_(raw("runs"))
        .where(fragment("mode = 'record'"))
    )
    if groups:
        # Groups join on the integer run key; the run's id and details join last, so a
        # filter on run_id narrows run_keys first and the scans of record_rows with it.
        keyed = exp.select(col("run_key"), col("run_id")).from_(raw("run_keys"))
        rel = exp.select("*").from_(join_groups(groups, taken_of).subquery(ident("coords")))
        rel = rel.join(keyed.subquery(ident("keys")), using=[ident("run_key")])
        if any(c.kind == "run" and c.source != "run_id" for c in wanted):  # at most one row per run: skippable
            rel = rel.join(run_info.subquery(ident("run_info")), using=[ident("run_id")], join_type="LEFT")
    else:
        rel = exp.select("*").from_(run_info.subquery(ident("run_info")))
    if args:
        pivot = exp.select(col("run_id"))
        for c in args:
            cond = exp.EQ(this=col("name"), expression=exp.Literal.string(c.source))
            agg = exp.Filter(this=exp.AnyValue(this=fragment(VALUE_SQL[c.type])), expression=exp.Where(this=cond))
            pivot = pivot.select(exp.alias_(agg, ident(c.name)), append=True)
        pivot = pivot.from_(raw("args")).group_by(col("run_id"))
        rel = rel.join(pivot.subquery(ident("run_args")), using=[ident("run_id")], join_type="LEFT")

    present = {x for p in groups for x in p}
    outputs = []
    for c in wanted:
        if c.kind == "run":
            outputs.append(col(c.source))
        elif c.kind == "loop":
            outputs.append(col(c.name) if c.name in present else exp.alias_(exp.cast(exp.null(), "BIGINT"), ident(c.name)))
        elif c.kind == "arg":
            outputs.append(col(c.name))
        else:
            sources = [col(value_column(order.index(p), c.name)) for p in c.paths]
            value = sources[0] if len(sources) == 1 else exp.Coalesce(this=sources[0], expressions=sources[1:])
            outputs.append(exp.alias_(value, ident(c.name)))
    return exp.select(*outputs).from_(rel.subquery(ident("joined")))
