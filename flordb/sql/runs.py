"""Runs as people see them: the listing behind ``flordb runs`` and run references.

A run reference (``flordb tag REF``, ``flordb compare A B``) is, in this order:
an exact run id; ``HEAD`` or ``HEAD~n`` (the latest run, the n-th before it);
a name or tag given to exactly one run; a unique part of a run id (the random
suffix is the distinctive part); a version prefix.
"""

from __future__ import annotations

import re

from flordb.errors import NoStoreError, QueryError
from flordb.store.catalog import Catalog, open_catalog
from flordb.store.layout import Layout
from flordb.store.segments import decode
from flordb.tabular import Rows

_HEAD = re.compile(r"^HEAD(?:~(\d+))?$", re.I)
COLUMNS = ["run_id", "name", "tags", "version", "script", "status", "started", "seconds", "args", "parent", "note",
           "error"]
OPTIONAL = ("name", "tags", "parent", "note", "error")  # shown when some run has one


def list_runs(include_replays: bool = False, layout: Layout | None = None) -> Rows:
    """Recorded runs, oldest first (with ``include_replays``, replay workers after them)."""
    try:
        with open_catalog(layout, create=False) as cat:
            cat.ingest()
            return _listing(cat, include_replays)
    except NoStoreError:
        return Rows([c for c in COLUMNS if c not in OPTIONAL], [])


def _listing(cat: Catalog, include_replays: bool) -> Rows:
    tables = ["runs", "replay_workers"] if include_replays else ["runs"]
    rows = []
    for table in tables:
        rows += cat.execute(
            f"""SELECT run_id, left(version, 7), script, status, strftime(started, '%Y-%m-%d %H:%M:%S'),
                       round(duration, 1), error, parent_run || '@' || parent_iteration
                FROM {table} ORDER BY started, run_id"""
        ).fetchall()
    args: dict[str, dict] = {}
    for run_id, name, vtype, num, txt in cat.execute(
        "SELECT run_id, name, vtype, num, txt FROM args ORDER BY rowid"
    ).fetchall():
        args.setdefault(run_id, {})[name] = decode(vtype, num, txt)
    labels: dict[tuple[str, str], list[str]] = {}
    for run_id, kind, value in cat.execute("SELECT run_id, kind, value FROM run_labels ORDER BY added").fetchall():
        labels.setdefault((run_id, kind), []).append(value)
    out = []
    for run_id, version, script, status, started, seconds, error, parent in rows:
        name = labels.get((run_id, "name"), [None])[-1]
        tags = ",".join(labels.get((run_id, "tag"), [])) or None
        note = labels.get((run_id, "note"), [None])[-1]
        out.append([run_id, name, tags, version, script, status, started, seconds, Args(args.get(run_id, {})),
                    parent, note, error or ("" if any(r[6] for r in rows) else None)])
    keep = [i for i, c in enumerate(COLUMNS) if c not in OPTIONAL or any(r[i] is not None for r in out)]
    return Rows([COLUMNS[i] for i in keep], [[r[i] for i in keep] for r in out])


def label_run(ref: str, kind: str, value: str, remove: bool = False, layout: Layout | None = None) -> str:
    """Add (or with ``remove`` take off) a name, tag or note of the run ``ref`` names; returns its id.

    The one code path of ``flordb tag``, ``flordb note`` and the tag editor of ``flordb ui``.
    """
    value = (value or "").strip()
    if not value:
        raise QueryError(f"the {kind} is empty")
    with open_catalog(layout, create=False) as cat:
        cat.ingest()
        run_id = resolve_run(cat, ref)
        if remove:
            if not cat.remove_label(run_id, kind, value):
                raise QueryError(f"run {run_id} has no {kind} {value!r} (see `flordb runs`)")
        else:
            cat.add_label(run_id, kind, value)
    return run_id


class Args(dict):
    """A run's args: an object in JSON, ``name=value ...`` in a table or CSV."""

    def __str__(self) -> str:
        return " ".join(f"{k}={v!r}" for k, v in self.items())


def find_runs(cat: Catalog, ref: str) -> list[tuple[str, str, str]]:
    """(run_id, version, script) of the recorded runs ``ref`` names; see the module docstring."""
    text = ref.strip()
    runs = cat.execute("SELECT run_id, version, script FROM runs ORDER BY started, run_id").fetchall()
    exact = [r for r in runs if r[0] == text]
    if exact:
        return exact
    head = _HEAD.match(text)
    if head:
        n = int(head.group(1) or 0)
        return [runs[-1 - n]] if n < len(runs) else []
    named = {r[0] for r in cat.execute(
        "SELECT DISTINCT run_id FROM run_labels WHERE kind IN ('name', 'tag') AND value = ?", [text]
    ).fetchall()}
    if named:
        return [r for r in runs if r[0] in named]
    if not text:
        return []
    part = [r for r in runs if text in r[0]]
    if part:
        return part
    low = text.lower()
    return [r for r in runs if (r[1] or "").startswith(low)]


def resolve_run(cat: Catalog, ref: str) -> str:
    """The one run ``ref`` names, or a QueryError that lists the candidates."""
    hits = find_runs(cat, ref)
    if len(hits) == 1:
        return hits[0][0]
    if not hits:
        raise QueryError(f"no recorded run matches {ref!r}: give a part of its id, HEAD~n, a name or tag,"
                         " or a version prefix (see `flordb runs`)")
    shown = ", ".join(h[0] for h in hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")
    raise QueryError(f"{ref!r} matches {len(hits)} runs ({shown}); give more of the id")
