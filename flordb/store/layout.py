"""Where a project's store lives on disk.

The store is ``.flordb/`` at the project root (the git top level, else the
current directory); ``FLORDB_HOME`` overrides it. This module is imported by the
hot path, so it must stay free of heavy imports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def find_git_top(start: Path) -> Path | None:
    """Walk up to the directory holding ``.git``, without spawning git."""
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
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
