"""A private directory tree for one replay, so a replay never changes the user's files.

A replayed script runs in a copy of its version (the snapshot holds the
tracked and untracked files git does not ignore). Git-ignored inputs of the
project (``data/``, ``outputs/``, weights) are not in the version, yet the
script may read them, so they are brought in as well, but as *copies*: a
script that appends to ``outputs/history.txt`` once per epoch appends to the
replay's copy, and the user's file keeps its lines. Up to :func:`copy_limit`
bytes in all are copied (default 64 MiB, ``FLORDB_REPLAY_COPY_LIMIT``); beyond
that, and for tool directories such as ``.venv``, entries are linked, read-only
by convention: large inputs (data sets, weights) are read, not written, by
training scripts.

Each call makes a fresh tree (parallel workers never share one); trees are
removed when the process that made them exits.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
from pathlib import Path
from typing import Iterable

_made: list[Path] = []
_counter = itertools.count()


def copy_limit() -> int:
    try:
        return int(os.environ.get("FLORDB_REPLAY_COPY_LIMIT", str(64 << 20)))
    except ValueError:
        return 64 << 20


def pristine(git_dir: str, version: str, cache: Path) -> Path:
    """The files of ``version``, materialized once under ``cache`` and never run in."""
    from flordb.version.materialize import materialize

    dest = cache / version[:16]
    if not dest.exists():
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        materialize(git_dir, version, tmp)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def replay_tree(
    git_dir: str, version: str, work_tree: Path, root: Path, skip: Iterable[Path] = ()
) -> Path:
    """A new directory under ``root`` holding ``version`` plus copies of the user's ignored files."""
    source = pristine(git_dir, version, root / "src")
    _remove_stale(root / "trees")
    dest = root / "trees" / f"{version[:12]}-{os.getpid()}-{next(_counter)}"
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest, symlinks=True)
    _remember(dest)
    skipped = {Path(p).resolve() for p in skip}
    merge_missing(Path(work_tree), dest, skipped | {Path(work_tree).resolve() / ".git"}, copy_limit())
    return dest


# Directories of tools, not of the experiment: linked whole (copying a virtualenv per task is slow).
LINKED_DIRS = frozenset({
    ".venv", "venv", "node_modules", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
    ".ruff_cache", ".flordb", ".git", ".hg", ".svn",
})


def merge_missing(src: Path, dest: Path, skip: set[Path], limit: int, budget: list[int] | None = None) -> None:
    """Copy into ``dest`` every entry of ``src`` it lacks, recursively.

    Files over ``limit`` bytes, and every file once ``limit`` bytes were
    copied in all, are linked rather than copied; so are tool directories.
    """
    budget = [limit] if budget is None else budget
    try:
        entries = sorted(os.scandir(src), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name in (".git", ".flordb") or path.resolve() in skip:
            continue
        target = dest / entry.name
        try:
            if entry.is_symlink():
                if not target.exists() and not target.is_symlink():
                    target.symlink_to(os.readlink(path))
            elif entry.is_dir() and entry.name in LINKED_DIRS:
                if not target.exists() and not target.is_symlink():
                    target.symlink_to(path)
            elif entry.is_dir():
                if not target.exists():
                    target.mkdir()
                if target.is_dir() and not target.is_symlink():
                    merge_missing(path, target, skip, limit, budget)
            elif not target.exists() and not target.is_symlink():
                size = entry.stat().st_size
                if size <= budget[0]:
                    shutil.copy2(path, target)
                    budget[0] -= size
                else:
                    target.symlink_to(path)
        except OSError:
            continue  # unreadable entries stay out; the replay fails visibly if it needs them


def _remove_stale(trees: Path) -> None:
    """Trees left by processes that died before their exit handler ran."""
    try:
        entries = list(os.scandir(trees))
    except OSError:
        return
    for entry in entries:
        try:
            pid = int(entry.name.rsplit("-", 2)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except (ValueError, IndexError, OSError):
            continue


def _remember(path: Path) -> None:
    if not _made:
        atexit.register(_cleanup)
    _made.append(path)


def _cleanup() -> None:
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)
