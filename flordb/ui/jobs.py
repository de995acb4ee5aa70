"""Replays started from the page: one background thread each, progress kept for streaming."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from flordb.errors import FlorError
from flordb.ui import flor


@dataclass
class Job:
    job_id: str
    names: list[str]
    where: str | None
    state: str = "running"  # running | done | failed
    done: int = 0
    total: int = 0
    message: str = ""
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    patched: list[dict] = field(default_factory=list)  # {run_id, version, script}
    version: int = 0  # bumped on every change, so a stream sends only news

    def as_dict(self) -> dict:
        return {"job": self.job_id, "names": self.names, "where": self.where, "state": self.state,
                "done": self.done, "total": self.total, "message": self.message,
                "seconds": round(self.seconds, 2), "patched": self.patched}


class Jobs:
    def __init__(self, layout):
        self.layout = layout
        self.jobs: dict[str, Job] = {}
        self.changed = threading.Condition()

    def start(self, names: list[str], where: str | None) -> Job:
        job = Job(secrets.token_hex(6), list(names), where)
        self.jobs[job.job_id] = job
        _import_what_replay_needs()
        threading.Thread(target=self._run, args=(job,), name=f"replay-{job.job_id}", daemon=True).start()
        return job

    def _touch(self, job: Job, **changes) -> None:
        with self.changed:
            for k, v in changes.items():
                setattr(job, k, v)
            job.version += 1
            self.changed.notify_all()

    def _run(self, job: Job) -> None:
        t0 = time.perf_counter()
        try:
            report = flor.replay(self.layout, job.names, job.where,
                                 on_task=lambda done, total: self._touch(job, done=done, total=total))
            plan = report.plan
            patched = [{"run_id": r.run_id, "version": r.patched, "script": s.script}
                       for r in plan.runs for s in plan.statements[:1]]
            failed, diverged = report.failed, report.diverged
            if not plan.runs:
                msg, state = "Nothing to replay.", "done"
            elif failed:
                msg, state = f"{len(failed)} task(s) failed; see {failed[0].log}", "failed"
            else:
                msg = f"Replayed {len(plan.runs)} run(s)." + (f" DIVERGED: {', '.join(diverged)}" if diverged else "")
                state = "done"
            self._touch(job, state=state, message=msg, patched=patched, seconds=time.perf_counter() - t0)
        except FlorError as exc:
            self._touch(job, state="failed", message=exc.message, seconds=time.perf_counter() - t0)
        except Exception as exc:  # the page must hear of it rather than wait forever
            self._touch(job, state="failed", message=f"{type(exc).__name__}: {exc}",
                        seconds=time.perf_counter() - t0)

    def wait_change(self, job: Job, seen: int, timeout: float) -> int:
        with self.changed:
            self.changed.wait_for(lambda: job.version != seen, timeout=timeout)
            return job.version


# The modules a replay imports lazily, imported on the thread that starts a job rather than on the
# job's thread: two threads importing the same packages can hand one a half-initialized module.
_REPLAY_MODULES = (
    "numpy", "pyarrow.parquet", "git",
    "flordb.hindsight.api", "flordb.hindsight.plan", "flordb.hindsight.tasks", "flordb.hindsight.fill",
    "flordb.hindsight.partial", "flordb.hindsight.executor", "flordb.hindsight.executors.local",
    "flordb.hindsight.executors.scheduler", "flordb.hindsight.propagation",
    "flordb.hindsight.propagation.check", "flordb.hindsight.propagation.preview",
    "flordb.version", "flordb.version.repo", "flordb.version.sandbox", "flordb.sql.engine", "flordb.sql.schema",
)


def _import_what_replay_needs() -> None:
    import importlib

    for name in _REPLAY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional piece: the replay reports it if it needs it
            pass
