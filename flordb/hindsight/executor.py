"""Where replay tasks run: see :mod:`flordb.hindsight.executors` (scheduler, local, Ray).

This module keeps :func:`source_dir` (the private tree a task runs in) and the
old import path of the executor classes.
"""

from __future__ import annotations

from pathlib import Path

from flordb.hindsight.executors import Executor, LocalExecutor, TaskResult  # noqa: F401  (old import path)
from flordb.store.layout import Layout


def source_dir(layout: Layout, git_dir: str, version: str) -> Path:
    """A private tree holding ``version`` to run one task in (flordb.version.sandbox).

    Git-ignored inputs of the project (``data/``, weights) are not in the
    version, so they are copied in (large ones linked): the replay reads the
    same inputs as the original, and whatever it writes stays in its tree.
    """
    from flordb.version.sandbox import replay_tree

    return replay_tree(git_dir, version, layout.work_tree, layout.replays, skip=[layout.home])
<<<<<<< HEAD
=======


class LocalExecutor:
    """Tasks as local subprocesses, ``workers`` at a time."""

    def __init__(self, layout: Layout, git_dirs: dict[str, str], workers: int, progress=True):
        # progress: True for a bar on stderr, False for none, or a callable fn(done, total)
        self.layout = layout
        self.git_dirs = git_dirs  # patched version -> git dir holding it
        self.workers = max(1, workers)
        self.progress = progress

    def command(self, task: Task) -> tuple[list[str], Path, dict[str, str], Path]:
        src = source_dir(self.layout, self.git_dirs[task.version], task.version)
        task_dir = self.layout.replays / task.replay_id
        task_dir.mkdir(parents=True, exist_ok=True)
        task_file = task_dir / f"{task.task_id}.json"
        task_file.write_text(json.dumps(task.payload(), default=str))
        # The recorded run's thread count when known: floating-point reductions then add up
        # in the same order, and values match exactly; else share the cores.
        threads = str(task.threads or max(1, (os.cpu_count() or 1) // self.workers))
        env = {
            **os.environ,
            "FLORDB_REPLAY_TASK": str(task_file),
            "FLORDB_HOME": str(self.layout.home),
            "FLORDB_PROGRESS": "0",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "PYTHONUNBUFFERED": "1",
        }
        cwd = (src / task.cwd).resolve() if task.cwd not in ("", ".") else src
        return [sys.executable, str(src / task.script), *task.argv], cwd, env, task_dir / f"{task.task_id}.log"

    def run(self, tasks: list[Task]) -> list[TaskResult]:
        bar = _bar(len(tasks), self.progress)
        pending = sorted(tasks, key=lambda t: -t.estimate)
        running: list[tuple[Task, subprocess.Popen, float, Path, object]] = []
        results: list[TaskResult] = []
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    task = pending.pop(0)
                    cmd, cwd, env, log = self.command(task)
                    fh = open(log, "w")
                    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
                    running.append((task, proc, time.perf_counter(), log, fh))
                time.sleep(0.02)
                for item in list(running):
                    task, proc, t0, log, fh = item
                    if proc.poll() is None:
                        continue
                    fh.close()
                    running.remove(item)
                    results.append(TaskResult(task, proc.returncode, time.perf_counter() - t0, log))
                    if bar is not None:
                        bar.update(1)
        except BaseException:
            for task, proc, *_ in running:
                proc.kill()
            raise
        finally:
            if bar is not None:
                bar.close()
        return results


class _Callback:
    """A progress bar that calls ``fn(done, total)``: how the web page follows a replay."""

    def __init__(self, total: int, fn):
        self.total, self.done, self.fn = total, 0, fn
        fn(0, total)

    def update(self, n: int) -> None:
        self.done += n
        self.fn(self.done, self.total)

    def close(self) -> None:
        pass


def _bar(total: int, enabled):
    if callable(enabled):
        return _Callback(total, enabled)
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="replay", unit="task", file=sys.stderr, leave=False, disable=None)
>>>>>>> issue-13
