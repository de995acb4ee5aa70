"""Hindsight replay: ``flor.replay(...)``, ``flordb replay``, and the query hook.

The catalog is held only while planning and while ingesting the results,
never while workers run, so queries and training go on during a replay.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

from flordb.errors import HindsightError, UnknownColumnError


class ConfirmationRequired(HindsightError):
    """Replay needs a yes and there is no terminal to ask on."""

    exit_code = 2
from flordb.hindsight.executor import LocalExecutor, TaskResult
from flordb.hindsight.fidelity import Fidelity, check
from flordb.hindsight.plan import plan_replay
from flordb.hindsight.tasks import ReplayPlan
from flordb.store.catalog import Catalog, open_catalog
from flordb.store.layout import Layout, locate


@dataclass
class ReplayReport:
    plan: ReplayPlan
    results: list[TaskResult] = field(default_factory=list)
    fidelity: dict[str, Fidelity] = field(default_factory=dict)  # replay_id -> result
    seconds: float = 0.0

    @property
    def failed(self) -> list[TaskResult]:
        return [r for r in self.results if not r.ok]

    @property
    def diverged(self) -> list[str]:
        return [rid for rid, f in self.fidelity.items() if f.status == "diverged"]


def say(text: str) -> None:
    print(text, file=sys.stderr)


def render_plan(plan: ReplayPlan) -> str:
    lines = []
    versions = {r.version for r in plan.runs} | {v for _, v, _ in plan.refused}
    n_runs = len(plan.runs) + len(plan.refused)
    for st in plan.statements:
        runs = f"{n_runs} run{'s' if n_runs != 1 else ''} ({len(versions)} version{'s' if len(versions) != 1 else ''})"
        what = f"is missing from {runs}" if plan.only_missing else f"replays into {runs}"
        lines.append(f"{st.name} {what}. It is logged by {st.script}:{st.lineno} ({st.position}):")
        lines.append(f"    {st.text.strip()}")
    if plan.runs:
        varying = _varying_args(plan)
        head = ["run", "version", *varying, "strategy", "iterations", "checkpoints", "tasks", "est."]
        rows = [head]
        for r in plan.runs:
            rows.append([
                r.run_id, r.version[:7], *(str(r.args.get(a, "")) for a in varying), r.strategy,
                _ranges(r.iterations) if r.strategy in ("skip", "reexec") else "-",
                f"{r.checkpoints[0]}/{r.checkpoints[1]}", str(len(r.tasks)), f"{r.estimate:.1f} s",
            ])
        widths = [max(len(row[k]) for row in rows) for k in range(len(head))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        notes = sorted({r.note for r in plan.runs if r.note})
        lines += [f"  note: {n}" for n in notes]
    for run_id, version, reason in plan.refused:
        lines.append(f"  left out: run {run_id} (version {version[:7] or '?'}): {reason}")
    return "\n".join(lines)


def _varying_args(plan: ReplayPlan) -> list[str]:
    names = list(dict.fromkeys(a for r in plan.runs for a in r.args))
    return [a for a in names if len({repr(r.args.get(a)) for r in plan.runs}) > 1][:4]


def _ranges(its: list[int]) -> str:
    if not its:
        return "-"
    out, start, prev = [], its[0], its[0]
    for i in its[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(out)


def confirm(question: str, mode: str) -> bool:
    """``yes`` goes ahead, ``no`` never; ``ask`` prompts on a terminal, else refuses."""
    if mode == "yes":
        return True
    if mode == "no":
        return False
    if not sys.stdin.isatty():
        raise ConfirmationRequired(f"{question.rstrip('?')}: not confirmed; pass --yes (Python: replay='yes')")
    import click

    return click.confirm(question, default=True, err=True)


def replay(names, where: str | None = None, workers: int | None = None, yes: bool = False,
           layout: Layout | None = None, only_missing: bool = False, confirm_mode: str | None = None,
           progress: bool = True, quiet_if_nothing: bool = False) -> ReplayReport:
    """Fill in ``names`` for recorded runs by replaying them with the current statements.

    ``where`` is a SQL predicate over run, arg and main-loop columns of
    ``logs`` that narrows the runs and iterations replayed.
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise HindsightError("name at least one column to replay")
    layout = layout or locate()
    with open_catalog(layout) as cat:
        cat.ingest()
        plan = plan_replay(cat, names, where=where, workers=workers, only_missing=only_missing)
        git_dirs = _git_dirs(cat, plan)
        _record_refusals(cat, plan)
    report = ReplayReport(plan)
    if plan.runs or not quiet_if_nothing:
        say(render_plan(plan))
    if not plan.runs:
        if not quiet_if_nothing:
            say("Nothing to replay.")
        return report
    n_tasks = len(plan.tasks)
    question = (f"Replay {len(plan.runs)} run{'s' if len(plan.runs) != 1 else ''} ({n_tasks} task"
                f"{'s' if n_tasks != 1 else ''}) on {min(plan.workers, n_tasks)} worker"
                f"{'s' if min(plan.workers, n_tasks) != 1 else ''}, about {plan.estimate:.0f} s?")
    if not confirm(question, confirm_mode or ("yes" if yes else "ask")):
        say("Replay cancelled.")
        return report
    t0 = time.perf_counter()
    report.results = LocalExecutor(layout, git_dirs, plan.workers, progress=progress).run(plan.tasks)
    report.seconds = time.perf_counter() - t0
    with open_catalog(layout) as cat:
        cat.ingest()
        _finish(cat, report)
    _summarize(report)
    return report


def _git_dirs(cat: Catalog, plan: ReplayPlan) -> dict[str, str]:
    out = {}
    for r in plan.runs:
        row = cat.execute("SELECT git_dir FROM versions WHERE version = ?", [r.version]).fetchone()
        out[r.patched] = row[0]
        cat.record_version(r.patched, row[0], parent=r.version)
    return out


def _record_refusals(cat: Catalog, plan: ReplayPlan) -> None:
    """Runs whose version cannot take the statement: remembered, so queries stop retrying them."""
    statement = _statement_json(plan)
    for run_id, version, reason in plan.refused:
        cat.record_replay(
            replay_id=f"refused-{run_id}-{'-'.join(plan.names)}", run_id=run_id, names=plan.names,
            version=version, statement=statement, strategy=None, iterations=None, seconds=0.0,
            estimate=0.0, status="refused", fidelity=reason,
        )


def _statement_json(plan: ReplayPlan) -> str:
    return json.dumps({s.name: f"{s.script}:{s.lineno}: {s.text.strip()}" for s in plan.statements})


def _finish(cat: Catalog, report: ReplayReport) -> None:
    plan = report.plan
    by_replay: dict[str, list[TaskResult]] = {}
    for res in report.results:
        by_replay.setdefault(res.task.replay_id, []).append(res)
    statement = _statement_json(plan)
    for r in plan.runs:
        results = by_replay.get(r.replay_id, [])
        fid = check(cat, r.replay_id)
        report.fidelity[r.replay_id] = fid
        failed = [x for x in results if not x.ok]
        status = "failed" if failed else fid.status
        cat.record_replay(
            replay_id=r.replay_id, run_id=r.run_id, names=plan.names, version=r.patched, statement=statement,
            strategy=r.strategy, iterations=_ranges(r.iterations), seconds=max((x.seconds for x in results), default=0.0),
            estimate=r.estimate, status=status, fidelity=fid.first,
        )


def _summarize(report: ReplayReport) -> None:
    plan = report.plan
    say(f"Replayed {len(plan.runs)} run(s) in {report.seconds:.1f} s (estimated {plan.estimate:.1f} s).")
    for res in report.failed:
        tail = res.log.read_text(errors="replace").strip().splitlines()[-1:] if res.log.exists() else []
        say(f"  task {res.task.task_id} (run {res.task.run_id}) failed with exit code {res.returncode}:"
            f" {tail[0] if tail else ''}  [log: {res.log}]")
    for r in plan.runs:
        fid = report.fidelity.get(r.replay_id)
        if fid and fid.status == "diverged":
            say(f"  run {r.run_id} DIVERGED: {fid.first}")
    checked = [f for f in report.fidelity.values() if f.status == "ok"]
    if checked and not report.diverged:
        say(f"  fidelity: {sum(f.compared for f in checked)} recorded values reproduced exactly.")


def _missing_column_hook(cat: Catalog, err: UnknownColumnError, sql: str, mode: str) -> bool:
    """flor.query found columns no run recorded: replay them if the current code logs them."""
    from flordb.hindsight.extract import offer
    from flordb.hindsight.plan import locate_statements

    # "replay.<name>" is missing because <name> is: it comes with it.
    names = [n for n in err.names if not (n.startswith("replay.") and n[len("replay."):] in err.names)]
    extracted = offer(cat, names, mode)  # printed but never logged: read it from the console lines
    found = locate_statements(cat.layout.work_tree, names)
    if set(found) | extracted != set(names):
        return False
    if not found:
        return True
    cat.close()  # never hold the catalog while workers run
    try:
        report = replay(list(found), workers=None, layout=cat.layout, only_missing=True, confirm_mode=mode,
                        where=_where_of(sql), quiet_if_nothing=bool(extracted))
    finally:
        cat.open()
    if extracted:
        return True  # answer with what was extracted, whatever the replay of the rest did
    names = ", ".join(err.names)
    if not report.plan.runs and report.plan.refused:
        reasons = "; ".join(sorted({r for _, _, r in report.plan.refused}))
        raise HindsightError(f"{names}: no recorded version could take the statement ({reasons})")
    if report.plan.runs and not report.results:
        raise HindsightError(f"{names}: no run recorded it, and the replay was not run")
    if report.results and not any(r.ok for r in report.results):
        raise HindsightError(f"{names}: every replay task failed; see {report.failed[0].log}")
    return True


def replayed_statements(cat: Catalog, names: list[str], where: str | None = None) -> dict[str, list[str]]:
    """The statement texts each name's replayed values still come from, oldest replay first.

    A replay whose values were all replaced by a later one no longer counts; one
    narrowed by WHERE replaces only its part, so older statements may remain.
    With ``where`` (a predicate over ``logs``), only the rows it selects count.
    """
    serving = _serving_replays(cat, names, where)
    out: dict[str, list[str]] = {}
    for replay_id, names_, statement in cat.execute(
        "SELECT replay_id, names, statement FROM replays WHERE strategy IS DISTINCT FROM 'extract' ORDER BY started"
    ).fetchall():
        try:
            texts = json.loads(statement or "{}")
        except json.JSONDecodeError:  # one statement, stored as plain text
            texts = {n: statement for n in names_}
        for n, t in texts.items():
            text = t.split(": ", 1)[-1]
            if n in names and (replay_id, n) in serving and text not in out.setdefault(n, []):
                out[n].append(text)
    return {n: texts for n, texts in out.items() if texts}


def _serving_replays(cat: Catalog, names: list[str], where: str | None) -> set[tuple[str, str]]:
    """(replay_id, name) pairs whose values are still in the catalog (in the rows ``where`` selects)."""
    def everywhere(some: list[str]) -> set[tuple[str, str]]:
        return set(cat.execute(
            "SELECT DISTINCT replay_id, name FROM records WHERE replay_id IS NOT NULL AND list_contains(?, name)",
            [list(some)],
        ).fetchall())

    if where is None:
        return everywhere(names)
    import sqlglot
    from sqlglot import exp

    from flordb.query.engine import prepare, run_plan
    from flordb.query.logs import ident
    from flordb.query.schema import REPLAY_PREFIX, load_schema

    replayed = [n for n in names if REPLAY_PREFIX + n in load_schema(cat).columns]  # others: never replayed
    try:
        cond = sqlglot.parse_one(where, read="duckdb")
        out: set[tuple[str, str]] = set()
        for n in replayed:
            sel = exp.select(exp.column(ident(REPLAY_PREFIX + n))).distinct().from_("logs").where(cond.copy())
            for (rid,) in run_plan(cat, prepare(cat, sel.sql(dialect="duckdb"))[0]).itertuples(index=False, name=None):
                if isinstance(rid, str):
                    out.add((rid, n))
        return out
    except Exception:  # a predicate we cannot reuse here: look at every row
        return everywhere(replayed)


def gaps(cat: Catalog, names: list[str]) -> list[str]:
    """Names some finished runs lack, among runs of the scripts that log them.

    A run lacks a name when it never logged it and no replay of that name was
    tried on it; or, when a replay filled only some main-loop iterations (a
    narrowed ``--where``), when recorded iterations remain that no replay
    covered. A replay that was tried (whatever it produced, refused or failed)
    is not tried again here, so a statement that logs nothing in some runs
    does not replay them on every query; ``flordb replay`` always can.
    Cheap: run summaries and the replays table only.
    """
    if not names:
        return []
    missing = {r[0] for r in cat.execute(
        """WITH having_name AS (SELECT DISTINCT l.run_id, l.name, r.script FROM log_names l
                                JOIN runs r USING (run_id) WHERE list_contains(?, l.name)),
                scripts AS (SELECT DISTINCT name, script FROM having_name),
                tried AS (SELECT DISTINCT run_id, unnest(names) AS name FROM replays)
           SELECT DISTINCT s.name FROM scripts s JOIN runs r ON r.script = s.script
           WHERE r.mode = 'record' AND r.status = 'finished'
             AND NOT EXISTS (SELECT 1 FROM having_name h WHERE h.run_id = r.run_id AND h.name = s.name)
             AND NOT EXISTS (SELECT 1 FROM tried t WHERE t.run_id = r.run_id AND t.name = s.name)""",
        [names],
    ).fetchall()}
    covered: dict[tuple[str, str], set[int] | None] = {}  # None: the whole run
    for run_id, names_, strategy, iterations, status in cat.execute(
        "SELECT run_id, names, strategy, iterations, status FROM replays WHERE list_has_any(names, ?)", [names]
    ).fetchall():
        for n in set(names_) & set(names):
            have = covered.setdefault((run_id, n), set())
            if have is None or status in ("refused", "failed") or strategy in ("prefix", "suffix"):
                covered[(run_id, n)] = None
            else:
                have.update(_parse_ranges(iterations))
    recorded_by_run = set(cat.execute(
        "SELECT DISTINCT run_id, name FROM log_names WHERE NOT replayed AND list_contains(?, name)", [names]
    ).fetchall())
    partial = {key: its for key, its in covered.items()
               if its is not None and key[1] not in missing and key not in recorded_by_run}
    if partial:
        recorded: dict[str, set[int]] = {}
        for run_id, i in cat.execute(
            "SELECT run_id, coord[1] FROM loops WHERE kind = 'iter' AND replay_id IS NULL"
            " AND list_contains(?, run_id)", [sorted({r for r, _ in partial})]
        ).fetchall():
            recorded.setdefault(run_id, set()).add(int(i))
        missing |= {n for (run_id, n), its in partial.items() if recorded.get(run_id, set()) - its}
    return sorted(missing)


def _parse_ranges(text: str | None) -> set[int]:
    """Inverse of :func:`_ranges`: "0-3,5" -> {0, 1, 2, 3, 5}."""
    out: set[int] = set()
    for part in (text or "").split(","):
        lo, _, hi = part.partition("-")
        if lo.strip().isdigit():
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _replayed_column_hook(cat: Catalog, plan, schema, sql: str, mode: str) -> bool:
    """Before a query reads log columns: refresh stale replayed values, fill gaps."""
    from flordb.query.schema import REPLAY_PREFIX

    names = [schema.columns[c].source for c in plan.logs_columns
             if c in schema.columns and schema.columns[c].kind == "log"]
    replayed = [n for n in names if REPLAY_PREFIX + n in schema.columns]
    changed = _refresh_stale(cat, replayed, sql, mode) if replayed else False
    missing = gaps(cat, names)
    if not missing:
        return changed
    from flordb.hindsight.plan import locate_statements

    logged = sorted(locate_statements(cat.layout.work_tree, missing))
    if not logged:
        return changed
    if mode == "no":
        say(f"{', '.join(logged)}: some runs never logged it; the current code does (replay with --yes to fill them).")
        return changed
    cat.close()
    try:
        report = replay(logged, layout=cat.layout, only_missing=True, confirm_mode=mode, where=_where_of(sql),
                        quiet_if_nothing=True)
    except ConfirmationRequired as exc:
        say(f"{exc.message}; answering without those runs' values.")
        return changed
    finally:
        cat.open()
    return changed or bool(report.results)


def _refresh_stale(cat: Catalog, names: list[str], sql: str, mode: str) -> bool:
    """Replayed values come from an older statement than the current code's: ask."""
    from flordb.hindsight.plan import locate_statements

    before = replayed_statements(cat, names, _where_of(sql))
    if not before:
        return False
    now = locate_statements(cat.layout.work_tree, list(before))
    stale = {n: (next(t for t in before[n] if t != now[n].text.strip()), now[n].text.strip())
             for n in before if n in now and any(t != now[n].text.strip() for t in before[n])}
    if not stale:
        return False
    for n, (old, new) in stale.items():
        say(f"{n} was replayed from `{old}`, but the current code logs `{new}`.")
    try:
        go = confirm(f"Re-materialize {', '.join(stale)}?", mode if mode != "no" else "no")
    except ConfirmationRequired:
        go = False
    if not go:
        say("Answering with the values replayed from the earlier statement (pass --yes to re-materialize).")
        return False
    cat.close()
    try:
        replay(list(stale), layout=cat.layout, confirm_mode="yes", where=_where_of(sql))
    finally:
        cat.open()
    return True


def _where_of(sql: str) -> str | None:
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except Exception:
        return None
    for select in tree.find_all(exp.Select):
        tables = [t.name for t in select.args.get("from_", select.args.get("from")).find_all(exp.Table)] \
            if select.args.get("from_") or select.args.get("from") else []
        where = select.args.get("where")
        if "logs" in tables and where is not None and not select.args.get("joins"):
            return where.this.sql(dialect="duckdb")
    return None


def _register() -> None:
    import flordb.query.api as qapi

    qapi.missing_column_hook = _missing_column_hook
    qapi.stale_column_hook = _replayed_column_hook


_register()
