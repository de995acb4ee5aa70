"""Where replay tasks run: see :mod:`flordb.hindsight.executors` (scheduler, local, Ray).

This module keeps :func:`source_dir` (materializing a version to run) and the
old import path of the executor classes.
"""

from __future__ import annotations

import os
from pathlib import Path

from flordb.hindsight.executors import Executor, LocalExecutor, TaskResult  # noqa: F401  (old import path)
from flordb.store.layout import Layout


def source_dir(layout: Layout, git_dir: str, version: str) -> Path:
    """A read-only copy of ``version`` to run, made once and reused.

    Git-ignored inputs of the project (``data/``, weights) are not in the
    version, so each top-level entry of the work tree that the copy lacks is
    linked in: the replay reads the same inputs as the original.
    """
    from flordb.version import materialize

    dest = layout.replays / "src" / version[:16]
    if not dest.exists():
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        materialize(git_dir, version, tmp)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process made it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    for entry in layout.work_tree.iterdir():
        if entry.name in (".git", ".flordb") or entry == layout.home:
            continue
        target = dest / entry.name
        if not target.exists() and not target.is_symlink():
            try:
                target.symlink_to(entry)
            except OSError:
                pass
    return dest
