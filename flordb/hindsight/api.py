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
from flordb.hindsight.executors import TaskResult, executor_name, make_executor
from flordb.hindsight.fidelity import Fidelity, check, guard_plan
from flordb.hindsight.partial import failure_reason
from flordb.hindsight.plan import plan_replay
from flordb.hindsight.tasks import ReplayPlan
from flordb.store.catalog import Catalog, open_catalog
from flordb.store.claims import Claims
from flordb.store.layout import Layout, locate


@dataclass
class ReplayReport:
    plan: ReplayPlan
    results: list[TaskResult] = field(default_factory=list)
    fidelity: dict[str, Fidelity] = field(default_factory=dict)  # replay_id -> result
    seconds: float = 0.0
    waited: list[str] = field(default_factory=list)  # runs another replay was producing: its values serve
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
        lines += _schedule_lines(plan)
    for run_id, version, reason in plan.refused:
        lines.append(f"  left out: run {run_id} (version {version[:7] or '?'}): {reason}")
    return "\n".join(lines)


def _schedule_lines(plan: ReplayPlan) -> list[str]:
    """Workers x threads and why, then the total the user waits for and where the costs come from."""
    threads = sorted({t.threads or 1 for t in plan.tasks})
    per = f"{threads[0]}" if len(threads) == 1 else f"{threads[0]}-{threads[-1]}"
    workers = min(plan.workers, len(plan.tasks))
    why = f" ({plan.schedule.reason})" if plan.schedule is not None else ""
    out = [f"  schedule: {workers} worker{'s' if workers != 1 else ''} x {per} thread{'s' if per != '1' else ''}"
           f"{why}; total about {plan.estimate:.1f} s"]
    if plan.calibration is not None:
        out.append(f"  {plan.calibration.describe()}")
    return out


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
           progress: bool = True, quiet_if_nothing: bool = False, executor: str | None = None,
           address: str | None = None) -> ReplayReport:
    """Fill in ``names`` for recorded runs by replaying them with the current statements.

    ``where`` is a SQL predicate over run, arg and main-loop columns of
    ``logs`` that narrows the runs and iterations replayed. ``workers`` is an
    upper bound: tasks run side by side only as far as their threads, memory
    and GPUs fit. ``executor`` is ``local`` or ``ray`` (default:
    ``FLORDB_EXECUTOR``, else local); ``address`` the Ray cluster (``auto``,
    ``HOST:PORT``; default ``RAY_ADDRESS``, else a local Ray).
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise HindsightError("name at least one column to replay")
    layout = layout or locate()
    kind = executor_name(executor)
    runner = make_executor(kind, layout, {}, workers, progress=progress, address=address)
    since = time.time()
    try:
        return _replay(names, where, workers, yes, layout, only_missing, confirm_mode, quiet_if_nothing, kind,
                       runner, since)
    finally:
        runner.close()


def _replay(names, where, workers, yes, layout, only_missing, confirm_mode, quiet_if_nothing, kind, runner,
            since) -> ReplayReport:
    if confirm_mode == "yes" or (yes and confirm_mode is None):
        runner.prestart()  # a worker imports the script's libraries while the plan is made
    with open_catalog(layout) as cat:
        cat.ingest()
        plan = plan_replay(cat, names, where=where, workers=workers, only_missing=only_missing,
                           capacity=runner.capacity, executor=kind,
                           where_word=runner.where)
        runner.git_dirs.update(_git_dirs(cat, plan))
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
    claims = Claims(layout)
    try:
        _claim(claims, plan, report, since)
        runner.workers = plan.workers
        t0 = time.perf_counter()
        if plan.runs:
            report.results = runner.run(plan.tasks)
        report.seconds = time.perf_counter() - t0
        if plan.runs:
            with open_catalog(layout) as cat:
                cat.ingest()
                _finish(cat, report, kind)
            _summarize(report)
            _guard(report, runner, kind)
            for r in plan.runs:
                if any(x.ok for x in report.results if x.task.run_id == r.run_id):
                    claims.finish(r.run_id, plan.names, r.replay_id)
        claims.release()
        for run_id in report.waited:
            claims.wait(run_id, plan.names)
    finally:
        claims.release()
    if report.waited:
        say(f"  {len(report.waited)} run(s) were being replayed by another process: using its values.")
    return report


def _claim(claims: Claims, plan: ReplayPlan, report: ReplayReport, since: float) -> None:
    """Claim (run, name) for every run of the plan; runs another replay holds or just did are left to it."""
    keep = []
    for r in plan.runs:
        state, holder = claims.acquire(r.run_id, plan.names, since, r.replay_id)
        if state == "ok":
            keep.append(r)
            continue
        report.waited.append(r.run_id)
        if state == "busy":
            say(f"  run {r.run_id}: another replay (pid {holder.get('pid', '?')} on {holder.get('host', '?')})"
                f" is producing {', '.join(plan.names)}; waiting for it")
    plan.runs = keep


def _guard(report: ReplayReport, runner, executor: str) -> None:
    """The runtime guard: runs that diverged after skipping nested loops run again, re-executing them."""
    again = guard_plan(report.plan, report.fidelity)
    if again is None:
        return
    say(f"Re-running {len(again.runs)} run(s) with every nested loop executed (the skipping replay diverged).")
    sub = ReplayReport(again)
    runner.workers = again.workers
    sub.results = runner.run(again.tasks)
    with open_catalog(runner.layout) as cat:
        cat.ingest()
        _finish(cat, sub, executor)
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


def _finish(cat: Catalog, report: ReplayReport, executor: str = "local") -> None:
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
            work=sum(x.seconds for x in results if x.ok), model=sum(x.task.model for x in results if x.ok),
            executor=executor, workers=plan.workers, threads=r.facts.threads if r.facts else None,
            attempts=sum(x.attempts for x in results),
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
