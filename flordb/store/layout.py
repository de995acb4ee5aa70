"""Where a project's store lives on disk.

The store is ``.flordb/`` at the project root (the git top level, else the
current directory); ``FLORDB_HOME`` overrides it. This module is imported by the
hot path, so it must stay free of heavy imports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def find_git_top(start: str | os.PathLike) -> Path | None:
    """The project's git top level: the one function that decides it (store and snapshots).

    Walks up from ``start`` (a file or a directory) to the first directory
    whose ``.git`` is a git directory (it has ``HEAD``) or a ``gitdir:`` file
    (worktrees, submodules), without spawning git: this runs at every start.
    """
    start = Path(start).absolute()
    for d in (start, *start.parents):
        dot = d / ".git"
        try:
            if dot.is_dir():
                if (dot / "HEAD").exists():
                    return d
            elif dot.is_file() and dot.read_bytes()[:8] == b"gitdir: ":
                return d
        except OSError:
            continue
    return None


@dataclass(frozen=True)
class Layout:
    work_tree: Path
    home: Path

    @property
    def segments(self) -> Path:
        return self.home / "segments"

    @property
    def objects(self) -> Path:
        return self.home / "objects"

    @property
    def catalog(self) -> Path:
        return self.home / "flor.duckdb"

    @property
    def private_git(self) -> Path:
        return self.home / "git"

    @property
    def replays(self) -> Path:
        return self.home / "replays"

    @property
    def history(self) -> Path:
        return self.home / "shell_history"

    def run_dir(self, run_id: str) -> Path:
        return self.segments / run_id


def locate(start: str | os.PathLike | None = None) -> Layout:
    """The layout for the project containing ``start`` (default: the cwd)."""
    here = Path(start or os.getcwd()).resolve()
    work_tree = find_git_top(here) or here
    home = os.environ.get("FLORDB_HOME")
    return Layout(work_tree=work_tree, home=Path(home).resolve() if home else work_tree / ".flordb")
