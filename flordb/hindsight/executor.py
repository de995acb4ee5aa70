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
