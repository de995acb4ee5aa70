"""Executors run replay tasks (DESIGN decision 7): one interface, two ways to travel.

- :mod:`.scheduler`: what each task needs (threads, memory, GPU) and how many fit at once.
- :mod:`.base`: the :class:`Executor` loop (admission, one retry, Ctrl-C, one progress bar).
- :mod:`.local`: subprocesses on this machine.
- :mod:`.ray`: self-contained tasks on a Ray cluster (``pip install 'flordb[ray]'``).

Which one: the ``executor=`` argument, else ``FLORDB_EXECUTOR`` (``local`` or
``ray``); Ray's address: ``address=``, else ``RAY_ADDRESS``, else a local Ray.
"""

from __future__ import annotations

import os

from flordb.errors import HindsightError
from flordb.hindsight.executors.base import Executor, TaskResult
from flordb.hindsight.executors.local import LocalExecutor
from flordb.hindsight.executors.scheduler import Resources, Schedule, machine, plan_workers, simulate

EXECUTORS = ("local", "ray")

__all__ = ["Executor", "TaskResult", "LocalExecutor", "Resources", "Schedule", "machine", "plan_workers",
           "simulate", "executor_name", "make_executor"]


def executor_name(name: str | None = None) -> str:
    """The executor to use: ``name``, else ``FLORDB_EXECUTOR``, else ``local``."""
    chosen = (name or os.environ.get("FLORDB_EXECUTOR") or "local").strip().lower()
    if chosen not in EXECUTORS:
        raise HindsightError(f"unknown executor {chosen!r}: use one of {', '.join(EXECUTORS)}"
                             " (executor= or FLORDB_EXECUTOR)")
    return chosen


def make_executor(name: str | None, layout, git_dirs: dict[str, str], workers: int | None = None,
                  progress: bool = True, address: str | None = None) -> Executor:
    if executor_name(name) == "ray":
        from flordb.hindsight.executors.ray import RayExecutor

        return RayExecutor(layout, git_dirs, workers, progress=progress, address=address)
    return LocalExecutor(layout, git_dirs, workers, progress=progress)
