"""The columns of ``logs``, read from the catalog.

``logs`` has one row per run and loop coordinate. Its columns, in order:
run columns, loop columns (one per ``flor.loop`` name), arg columns (one per
``flor.arg`` name) and log columns (one per ``flor.log`` name). Earlier kinds
win a name clash; the later one stays reachable under a prefix, so nothing is
silently shadowed: a log named ``epoch`` is the column ``log.epoch``, an arg
named like a loop is ``arg.<name>``. Names are compared without case (DuckDB's
identifiers are case-insensitive): ``Loss``, ``loss`` and ``LOSS`` logged in one
project are ``Loss``, ``log.loss`` and ``log.LOSS#2``, in the order first logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flordb.store.segments import BOOL, FLOAT, HUGE, INT, JSON, NULL, REPR, STR

RUN_COLUMNS = {"run_id": "VARCHAR", "version": "VARCHAR", "tstamp": "TIMESTAMPTZ", "script": "VARCHAR"}
LOG_PREFIX, ARG_PREFIX = "log.", "arg."
# Provenance of hindsight values: "replay.<name>" is the replay that produced
# the value in that row, NULL where the run recorded it itself.
REPLAY_PREFIX = "replay."


def unique_name(name: str, prefix: str, taken: set[str]) -> str:
    """The column a recorded name is reached by: itself when free, else ``prefix + name``,
    else ``prefix + name + "#2"``, ``"#3"``, ... (compared without case, as DuckDB does).

    >>> unique_name("loss", "log.", {"run_id", "loss", "log.loss"})
    'log.loss#2'
    """
    if name and name.lower() not in taken:
        return name
    out, n = prefix + name, 1
    while out.lower() in taken:
        n += 1
        out = f"{prefix}{name}#{n}"
    return out


def sql_type(vtypes: set[int]) -> str:
    """The SQL type of a column whose values were logged with these vtypes."""
    kinds = set(vtypes) - {NULL}
    if not kinds:
        return "DOUBLE"
    if kinds <= {INT}:
        return "BIGINT"
    if kinds <= {INT, HUGE}:
        return "HUGEINT"
    if kinds <= {BOOL}:
        return "BOOLEAN"
    if kinds <= {FLOAT, INT, BOOL, HUGE}:
        return "DOUBLE"
    if kinds <= {JSON}:
        return "JSON"
    return "VARCHAR"


@dataclass
class Column:
    name: str  # the column name users type
    kind: str  # run | loop | arg | log | provenance
    source: str  # the recorded name
    type: str
    paths: tuple[tuple[str, ...], ...] = ()  # log: loop paths it was logged at; loop: paths ending in it
    unique: bool = False  # log: one recorded value per coordinate in every run, so no pivot is needed


@dataclass
class LogsSchema:
    columns: dict[str, Column] = field(default_factory=dict)
    # The `logs` relation built for each set of names (see logs.build_logs): the schema is
    # cached per catalog generation, and so are these.
    relations: dict = field(default_factory=dict, repr=False, compare=False)
    # Ids of the stored layout (schema/022_record_layout.sql): log name -> name_id, loop path -> path_id.
    name_ids: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    path_ids: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def of_kind(self, kind: str) -> list[Column]:
        return [c for c in self.columns.values() if c.kind == kind]

    def types(self) -> dict[str, str]:
        return {name: col.type for name, col in self.columns.items()}


def load_schema(catalog) -> LogsSchema:
    """Describe ``logs`` from the catalog's summaries; reused until something is ingested or replayed."""
    return catalog.cached("logs_schema", lambda: _load_schema(catalog))


def _load_schema(catalog) -> LogsSchema:
    """Describe ``logs`` from the catalog's summaries (cheap: no scan of records)."""
    ex = catalog.execute
    log_rows = ex(
        "SELECT name, path, list(DISTINCT vtype), bool_or(replayed) OR bool_or(coalesce(dups, 1) > 0)"
        " FROM log_names GROUP BY name, path ORDER BY min(rowid)"
    ).fetchall()
    arg_rows = ex("SELECT name, list(DISTINCT vtype) FROM args GROUP BY name ORDER BY min(rowid)").fetchall()
    loop_paths = [tuple(r[0]) for r in ex("SELECT DISTINCT path FROM loops ORDER BY 1").fetchall()]

    schema = LogsSchema()
    schema.name_ids = dict(ex("SELECT name, name_id FROM names").fetchall())
    schema.path_ids = {tuple(p): i for p, i in ex("SELECT path, path_id FROM paths").fetchall()}
    cols = schema.columns
    for name, typ in RUN_COLUMNS.items():
        cols[name] = Column(name, "run", name, typ)

    all_paths = set(loop_paths) | {tuple(p) for _, p, _, _ in log_rows}
    loop_ends: dict[str, set[tuple[str, ...]]] = {}
    for path in sorted(all_paths, key=len):
        for i, loop_name in enumerate(path):
            loop_ends.setdefault(loop_name, set()).add(tuple(path[: i + 1]))
    for loop_name, ends in loop_ends.items():
        if loop_name not in cols:
            cols[loop_name] = Column(loop_name, "loop", loop_name, "BIGINT", tuple(sorted(ends)))

    # SQL identifiers are case-insensitive in DuckDB, even quoted: "Loss" would read `loss`.
    taken = {c.lower() for c in cols}

    def clashes(name: str) -> bool:
        return name.lower() in taken

    def expose(name: str, prefix: str) -> str:
        """A column name no other column has, whatever the case: see :func:`unique_name`."""
        out = unique_name(name, prefix, taken)
        taken.add(out.lower())
        return out

    for name, vtypes in arg_rows:
        exposed = expose(name, ARG_PREFIX)
        cols[exposed] = Column(exposed, "arg", name, sql_type(set(vtypes)))

    replayed = {r[0] for r in ex("SELECT DISTINCT name FROM log_names WHERE replayed").fetchall()}
    by_name: dict[str, tuple[list, set, list]] = {}
    for name, path, vtypes, pivot in log_rows:
        paths, types, pivots = by_name.setdefault(name, ([], set(), []))
        paths.append(tuple(path))
        types.update(vtypes)
        pivots.append(bool(pivot) or not path)
    for name, (paths, types, pivots) in by_name.items():
        exposed = expose(name, LOG_PREFIX)
        cols[exposed] = Column(exposed, "log", name, sql_type(types), tuple(paths), unique=not any(pivots))
    for name, (paths, types, _) in by_name.items():
        if name in replayed and not clashes(REPLAY_PREFIX + name):
            taken.add((REPLAY_PREFIX + name).lower())
            cols[REPLAY_PREFIX + name] = Column(REPLAY_PREFIX + name, "provenance", name, "VARCHAR", tuple(paths))
    return schema


# Re-exported for the builder: how a stored value becomes a typed SQL value.
# Casts are guarded by vtype: DuckDB evaluates an aggregate's argument on every
# row of the group before its FILTER, so an unguarded CAST(txt AS JSON) or
# CAST(num AS BIGINT) fails on another name's repr text or inf.
# Integers beyond 2**53 keep their exact digits in txt (flordb.store.segments.encode_int).
VALUE_SQL = {
    "DOUBLE": "num",
    "BIGINT": f"CASE WHEN vtype = {INT} AND txt IS NULL THEN CAST(num AS BIGINT)"
    f" WHEN vtype = {INT} THEN CAST(txt AS BIGINT) END",
    "HUGEINT": f"CASE WHEN vtype IN ({INT}, {HUGE}) AND txt IS NULL THEN CAST(num AS HUGEINT)"
    f" WHEN vtype IN ({INT}, {HUGE}) THEN CAST(txt AS HUGEINT) END",
    "BOOLEAN": "num <> 0",
    "JSON": f"CASE WHEN vtype = {JSON} THEN CAST(txt AS JSON) END",
    "VARCHAR": f"CASE WHEN vtype IN ({STR}, {JSON}, {REPR}, {HUGE}) THEN txt"
    f" WHEN vtype = {INT} AND txt IS NOT NULL THEN txt"
    f" WHEN vtype = {INT} THEN CAST(CAST(num AS BIGINT) AS VARCHAR)"
    f" WHEN vtype = {BOOL} THEN CAST(num <> 0 AS VARCHAR) ELSE CAST(num AS VARCHAR) END",
}
