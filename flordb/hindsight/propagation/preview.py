"""A preview a user can trust: what propagation would do to each recorded version.

``flordb replay NAME --dry-run`` prints, per code version, the unified diff of
the patched old source or the refusal and its reason. Nothing is written: no
patched commit, no replay record, no catalog change beyond the usual ingest.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from flordb.errors import PropagationError
from flordb.hindsight.propagation.pipeline import propagate


@dataclass(frozen=True)
class VersionPreview:
    """One version's outcome: ``diff`` when the statements were placed, else ``reason``."""

    version: str
    runs: tuple[str, ...]
    diff: str | None
    reason: str | None

    def render(self) -> str:
        runs = ", ".join(self.runs)
        head = f"# version {self.version[:12]} (runs: {runs})"
        if self.reason is not None:
            return f"{head}\nrefused: {self.reason}\n"
        return f"{head}\n{self.diff or 'unchanged: the version already has the statement'}\n"


def preview(new_source: str, linenos: list[int], old_source: str, label: str = "script.py") -> str:
    """The unified diff that placing the statements at ``linenos`` makes to ``old_source``.

    Raises ``PropagationError`` like :func:`propagate` when one cannot be placed.
    """
    patched = old_source
    for lineno in linenos:
        patched = propagate(new_source, lineno, patched)
    return "".join(difflib.unified_diff(
        old_source.splitlines(keepends=True), patched.splitlines(keepends=True),
        fromfile=f"a/{label}", tofile=f"b/{label}"))


def dry_run(cat, names: list[str], where: str | None = None) -> list[VersionPreview]:
    """Preview propagation of the current ``flor.log`` statements for ``names`` into every recorded version.

    ``where`` narrows the runs like ``flordb replay --where`` (run and arg columns).
    """
    from sqlglot import exp

    from flordb.errors import HindsightError, UnknownColumnError
    from flordb.hindsight.plan import locate_statements, pushdown
    from flordb.sql.engine import prepare, run_plan
    from flordb.sql.schema import load_schema
    from flordb.version import read_file

    work_tree = cat.layout.work_tree
    schema = load_schema(cat)
    runs = cat.execute(
        "SELECT r.run_id, r.version, r.script, v.git_dir FROM runs r LEFT JOIN versions v USING (version)"
        " WHERE r.mode = 'record' AND r.status <> 'running' ORDER BY r.started").fetchall()
    found = locate_statements(work_tree, names, {r[2] for r in runs if r[2]})
    missing = [n for n in names if n not in found]
    if missing:
        raise UnknownColumnError(missing, schema.names)
    script = found[names[0]].script
    if any(found[n].script != script for n in names):
        raise HindsightError("the statements to replay are in different files; replay them one file at a time")
    runs = [r for r in runs if r[2] == script]
    cond = pushdown(where, schema, None)
    if cond is not None:
        sel = exp.select(exp.column("run_id")).distinct().from_("logs").where(cond.copy())
        chosen = set(run_plan(cat, prepare(cat, sel)[0])["run_id"])
        runs = [r for r in runs if r[0] in chosen]
    current = (work_tree / script).read_text()
    linenos = [found[n].lineno for n in names]
    by_version: dict[str, list] = {}
    for run_id, version, _, git_dir in runs:
        by_version.setdefault(version or "", []).append((run_id, git_dir))
    out = []
    for version, members in by_version.items():
        run_ids = tuple(r for r, _ in members)
        if not version:
            out.append(VersionPreview("(none)", run_ids, None, "the run has no recorded code version"))
            continue
        try:
            diff = preview(current, linenos, read_file(members[0][1], version, script), script)
            out.append(VersionPreview(version, run_ids, diff, None))
        except PropagationError as exc:
            out.append(VersionPreview(version, run_ids, None, exc.reason))
    return out
