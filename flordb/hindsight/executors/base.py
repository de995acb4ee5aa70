"""The executor interface and the one loop that drives every executor.

An executor only knows how to start a self-contained task, wait for some to
finish, and cancel; admission (:class:`~.scheduler.Pool`), the one retry of a
failed task, Ctrl-C and the progress bar live here, once.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from flordb.hindsight.executors.scheduler import Pool, Resources, need


@dataclass
class TaskResult:
    task: object  # flordb.hindsight.tasks.Task
    returncode: int
    seconds: float
    log: Path
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Executor:
    """Runs replay tasks; subclasses implement ``capacity``, ``start``, ``wait`` and ``cancel``."""

    name = "executor"
    where = "cores"  # how the plan names the capacity: "cores" here, "cluster CPUs" on Ray
    retries = 1

    def __init__(self, workers: int | None = None, progress: bool = True):
        self.workers = workers
        self.progress = progress

    # -- what a subclass provides --------------------------------------------------------

    def capacity(self) -> Resources:
        raise NotImplementedError

    def start(self, task, attempt: int):
        """Start ``task``; return a handle (not blocking)."""
        raise NotImplementedError

    def wait(self, handles: list, timeout: float) -> list[tuple[object, int, float, Path]]:
        """Finished handles among ``handles``: (handle, returncode, seconds, log)."""
        raise NotImplementedError

    def cancel(self, handles: list) -> None:
        raise NotImplementedError

    def prestart(self) -> None:
        """Optionally start a worker for the first task before the plan is made (local: see ``.host``)."""

    def discard(self, task) -> None:
        """Before a retry: drop what the failed attempt wrote, so its values are not ingested twice."""

    def close(self) -> None:
        pass

    # -- the loop ---------------------------------------------------------------------------

    def run(self, tasks: list) -> list[TaskResult]:
        """Every task to a result: admitted as resources allow, a failure retried once."""
        capacity = self.capacity()
        pool = Pool(capacity, self.workers or len(tasks) or 1)
        pending = sorted(tasks, key=lambda t: -t.estimate)
        attempts: dict[str, int] = {}
        running: dict[object, object] = {}  # handle -> task
        results: list[TaskResult] = []
        bar = _Progress(len(tasks), self.progress, self.name)
        warmed = False
        try:
            while pending or running:
                for task in pool.admit(pending):
                    attempts[task.task_id] = attempts.get(task.task_id, 0) + 1
                    running[self.start(task, attempts[task.task_id])] = task
                if not warmed:
                    warmed = True
                    _load_for_ingest()
                bar.show(running=len(running), queued=len(pending))
                for handle, rc, seconds, log in self.wait(list(running), timeout=0.05):
                    task = running.pop(handle)
                    pool.give(need(task))
                    if rc != 0 and attempts[task.task_id] <= self.retries:
                        bar.retried += 1
                        self.discard(task)
                        pending.insert(0, task)  # once more, first in line
                        continue
                    results.append(TaskResult(task, rc, seconds, log, attempts[task.task_id]))
                    bar.done(ok=rc == 0)
        except BaseException:  # Ctrl-C, or the executor broke: stop every task still running
            self.cancel(list(running))
            raise
        finally:
            bar.close()
        return results


def _load_for_ingest() -> None:
    """Import what checking and ingesting the results needs while the first tasks run, not after."""
    try:
        import pyarrow.parquet  # noqa: F401  (flordb.store.validate reads each new segment's footer)
    except ImportError:
        pass


class _Progress:
    """One bar on stderr for the whole replay, with per-task status in its postfix."""

    def __init__(self, total: int, enabled, name: str):
        """``enabled`` may be a callable ``fn(done, total)``: how the web page follows a replay."""
        self.bar = None
        self.failed = self.retried = 0
        self.last = None
        self.total, self.finished = total, 0
        self.callback = enabled if callable(enabled) else None
        if self.callback is not None:
            self.callback(0, total)
        elif enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"replay ({name})", unit="task", file=sys.stderr, leave=False,
                            disable=None)

    def show(self, running: int, queued: int) -> None:
        state = (running, queued, self.failed, self.retried)
        if self.bar is None or state == self.last:
            return
        self.last = state
        post = {"running": running, "queued": queued}
        if self.failed:
            post["failed"] = self.failed
        if self.retried:
            post["retried"] = self.retried
        self.bar.set_postfix(post, refresh=True)

    def done(self, ok: bool) -> None:
        if not ok:
            self.failed += 1
        self.finished += 1
        if self.callback is not None:
            self.callback(self.finished, self.total)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

