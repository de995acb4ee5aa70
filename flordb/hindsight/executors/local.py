"""Replay tasks as subprocesses of this machine (DESIGN decision 7).

Each task runs the user's (patched) script on a materialized copy of its
version (:func:`flordb.hindsight.executor.source_dir`), with the recorded
run's thread count, writing segments into the store like any run. A failing
task leaves its log file and does not stop the others.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from flordb.hindsight.executors.base import Executor
from flordb.hindsight.executors.scheduler import Resources, machine
from flordb.store.layout import Layout


def thread_env(threads: int) -> dict[str, str]:
    """A worker keeps the recorded run's thread count: reductions add up in the same order."""
    n = str(max(1, threads))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


class LocalExecutor(Executor):
    """Tasks as local subprocesses, packed onto this machine's cores, at most ``workers`` at a time."""

    name = "local"

    def __init__(self, layout: Layout, git_dirs: dict[str, str], workers: int | None = None,
                 progress: bool = True, capacity: Resources | None = None):
        super().__init__(workers, progress)
        self.layout = layout
        self.git_dirs = git_dirs  # patched version -> git dir holding it
        self._capacity = capacity
        self.gpus_free: list[int] = []
        self.host: tuple[subprocess.Popen, int] | None = _EARLY.pop(str(layout.home), None)  # see prestart

    def capacity(self) -> Resources:
        if self._capacity is None:
            self._capacity = machine()
        self.gpus_free = list(range(int(self._capacity.gpus)))
        return self._capacity

    def command(self, task) -> tuple[list[str], Path, dict[str, str], Path]:
        from flordb.hindsight.executor import source_dir

        src = source_dir(self.layout, self.git_dirs[task.version], task.version)
        task_dir = self.layout.replays / task.replay_id
        task_dir.mkdir(parents=True, exist_ok=True)
        task_file = task_dir / f"{task.task_id}.json"
        task_file.write_text(json.dumps(task.payload(), default=str))
        env = {
            **os.environ,
            "FLORDB_REPLAY_TASK": str(task_file),
            "FLORDB_HOME": str(self.layout.home),
            "FLORDB_PROGRESS": "0",
            "PYTHONUNBUFFERED": "1",
            **thread_env(task.threads or 1),
        }
        cwd = (src / task.cwd).resolve() if task.cwd not in ("", ".") else src
        return [sys.executable, str(src / task.script), *task.argv], cwd, env, task_dir / f"{task.task_id}.log"

    def prestart(self) -> None:
        """Start a host for the first task while the plan is made (see :func:`latest_run_host`).

        Used by the first task with the same thread count; stopped unused
        otherwise (``close``). A host started earlier for this store
        (:func:`prestart_early`) is adopted instead.
        """
        if self.host is None:
            self.host = _EARLY.pop(str(self.layout.home), None) or latest_run_host(self.layout)

    def start(self, task, attempt: int):
        cmd, cwd, env, log = self.command(task)
        gpu = None
        if getattr(task, "gpus", 0) and self.gpus_free:
            gpu = self.gpus_free.pop(0)
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        fh = open(log, "w" if attempt == 1 else "a")
        proc = self._hand_to_host(cmd, cwd, env, log, task.threads or 1)
        if proc is None:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        return _Handle(proc, fh, log, time.perf_counter(), gpu)

    def _hand_to_host(self, cmd: list[str], cwd: Path, env: dict, log: Path, threads: int):
        """The prestarted host running this task, or None (none, used, dead, or another thread count)."""
        if self.host is None:
            return None
        proc, host_threads = self.host
        self.host = None
        try:
            if host_threads != threads or proc.poll() is not None:
                raise OSError("not usable for this task")
            proc.stdin.write(json.dumps({"argv": cmd[1:], "cwd": str(cwd), "env": env, "log": str(log)}).encode()
                             + b"\n")
            proc.stdin.close()
            return proc
        except (OSError, ValueError):
            _stop(proc)
            return None

    def close(self) -> None:
        if self.host is not None:
            _stop(self.host[0])
            self.host = None

    def wait(self, handles: list, timeout: float) -> list:
        deadline = time.perf_counter() + timeout
        while True:
            done = [h for h in handles if h.proc.poll() is not None]
            if done or time.perf_counter() >= deadline:
                break
            time.sleep(0.01)
        out = []
        for h in done:
            h.fh.close()
            if h.gpu is not None:
                self.gpus_free.append(h.gpu)
            out.append((h, h.proc.returncode, time.perf_counter() - h.t0, h.log))
        return out

    def discard(self, task) -> None:
        """Move the failed attempt's run directory out of the store (kept beside the task's log)."""
        from flordb.store.segments import iter_run_dirs, read_json

        for run_dir in iter_run_dirs(self.layout.segments):
            meta = read_json(run_dir / "run.json") or {}
            if meta.get("task") == task.task_id and meta.get("replay_id") == task.replay_id:
                dest = self.layout.replays / task.replay_id / f"discarded-{run_dir.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(run_dir, dest)

    def cancel(self, handles: list) -> None:
        for h in handles:
            h.proc.kill()
        for h in handles:
            h.proc.wait()
            h.fh.close()


_EARLY: dict[str, tuple[subprocess.Popen, int]] = {}  # store home -> host started before its executor


def prestart_early(layout: Layout) -> None:
    """Start a worker host as soon as a command that may replay begins (``flordb query --yes``).

    The query has not found what it lacks yet, but a replay is likely once
    allowed up front, and the host imports libraries on another core
    meanwhile. The executor the replay makes adopts it; an unused one is
    stopped at exit.
    """
    if str(layout.home) in _EARLY:
        return
    host = latest_run_host(layout)
    if host is not None:
        _EARLY[str(layout.home)] = host
        atexit.register(_stop_early)


def latest_run_host(layout: Layout) -> tuple[subprocess.Popen, int] | None:
    """A host for the latest recorded run's script and threads (most replays are of it), or None.

    Read from the run's segment directory: no catalog needed.
    """
    from flordb.store.segments import iter_run_dirs, read_json

    for run_dir in sorted(iter_run_dirs(layout.segments), key=lambda d: d.name, reverse=True)[:64]:
        meta = read_json(run_dir / "run.json") or {}
        if meta.get("mode") != "record" or not isinstance(meta.get("script"), str):
            continue
        script = layout.work_tree / meta["script"]
        threads = (read_json(run_dir / "end.json") or {}).get("threads")
        return _spawn_host(layout, script, threads if isinstance(threads, int) else None) if script.is_file() else None
    return None


def _stop_early() -> None:
    while _EARLY:
        _stop(_EARLY.popitem()[1][0])


def _spawn_host(layout: Layout, script: Path, threads: int | None) -> tuple[subprocess.Popen, int] | None:
    """A host for ``script`` with the run's thread count (:mod:`.host`), or None (turned off, nothing to import)."""
    from flordb.hindsight.executors.host import library_imports

    if os.environ.get("FLORDB_PRESTART", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    modules = library_imports(script, layout.work_tree)
    if not modules:
        return None
    env = {**os.environ, "FLORDB_HOME": str(layout.home), "FLORDB_PROGRESS": "0", "PYTHONUNBUFFERED": "1",
           **thread_env(threads or 1)}
    try:
        proc = subprocess.Popen([sys.executable, "-m", "flordb.hindsight.executors.host", *modules],
                                cwd=layout.work_tree, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    return proc, threads or 1


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass


class _Handle:
    __slots__ = ("proc", "fh", "log", "t0", "gpu")

    def __init__(self, proc, fh, log, t0, gpu):
        self.proc, self.fh, self.log, self.t0, self.gpu = proc, fh, log, t0, gpu
