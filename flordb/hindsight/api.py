"""Hindsight replay: ``flor.replay(...)`` and ``flordb replay``.

The catalog is held only while planning and while ingesting the results,
never while workers run, so queries and training go on during a replay.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

from flordb.errors import HindsightError


class ConfirmationRequired(HindsightError):
    """Replay needs a yes and there is no terminal to ask on."""

    exit_code = 2
from flordb.hindsight.executor import LocalExecutor, TaskResult
from flordb.hindsight.fidelity import Fidelity, check, guard_plan
from flordb.hindsight.partial import failure_reason
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
    reruns: list[tuple[str, str]] = field(default_factory=list)  # (diverged replay, its re-execution)

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
        from flordb.tabular import Rows, table  # the one renderer, as for query results

        lines += ["  " + line.rstrip() for line in table(Rows(head, rows[1:]), tablefmt="plain", footer=False).splitlines()]
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
    if mode in ("yes", "strict"):
        return True
    if mode == "no":
        return False
    if not sys.stdin.isatty():
        raise ConfirmationRequired(f"{question.rstrip('?')}: not confirmed; pass --yes (Python: replay='yes')")
    import click

    return click.confirm(question, default=False, err=True)


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
    _guard(report, layout, git_dirs, progress)
    return report


def _guard(report: ReplayReport, layout: Layout, git_dirs: dict[str, str], progress: bool) -> None:
    """The runtime guard: runs that diverged after skipping nested loops run again, re-executing them."""
    again = guard_plan(report.plan, report.fidelity)
    if again is None:
        return
    say(f"Re-running {len(again.runs)} run(s) with every nested loop executed (the skipping replay diverged).")
    sub = ReplayReport(again)
    sub.results = LocalExecutor(layout, git_dirs, again.workers, progress=progress).run(again.tasks)
    with open_catalog(layout) as cat:
        cat.ingest()
        _finish(cat, sub)
    _summarize(sub)
    first = {r.run_id: r.replay_id for r in report.plan.runs}
    for r in again.runs:  # the answer now comes from the second attempt; both stay in `replays`
        report.reruns.append((first[r.run_id], r.replay_id))
        report.fidelity.pop(first[r.run_id], None)
    report.fidelity.update(sub.fidelity)
    report.results = [x for x in report.results if x.task.run_id not in {r.run_id for r in again.runs}] + sub.results


def replay_preview(names, where: str | None = None, layout: Layout | None = None) -> list:
    """Per recorded version, the patch propagation would make or its refusal; changes nothing."""
    from flordb.hindsight.propagation.preview import dry_run

    names = [names] if isinstance(names, str) else list(names)
    with open_catalog(layout or locate()) as cat:
        cat.ingest()
        return dry_run(cat, names, where=where)


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
            estimate=r.estimate, status=status, fidelity=failure_reason(failed) if failed else fid.summary,
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
