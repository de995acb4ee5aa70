"""Read an old version back: into a fresh directory, one file, or a file list.

Everything here reads the object database with a temporary index and an
explicit destination; the repository's HEAD, index, refs and work tree are
never written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from flordb.errors import VersionError


def materialize(snap_git_dir, commit, dest) -> Path:
    """Write the files of ``commit`` into the new directory ``dest``; return it.

    ``dest`` must not exist or be empty; it gets no ``.git``. Plumbing
    (``read-tree`` into a temporary index, then ``checkout-index``) is used
    rather than ``git archive``, which would apply ``export-ignore`` and
    ``export-subst`` attributes and so change the files. Modes (executable
    bits, symlinks) are kept. On failure ``dest`` is removed again.
    """
    from flordb.version.repo import open_repo, plumbing, resolve_commit

    dest = Path(dest).absolute()
    with open_repo(snap_git_dir) as repo:
        commit = resolve_commit(repo, commit)
        existed = dest.exists()
        if existed and (not dest.is_dir() or any(dest.iterdir())):
            raise VersionError(f"cannot materialize into {dest}: it exists and is not an empty directory")
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(prefix="flordb-index-") as tmp:
                with plumbing(repo, index=os.path.join(tmp, "index"), work_tree=dest) as g:
                    g.read_tree(commit)
                    g.checkout_index("-a", "-f")
        except BaseException:
            if existed:
                for child in dest.iterdir():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            else:
                shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest


def read_file(snap_git_dir, commit, path) -> str:
    """The text (UTF-8) of the repository-relative ``path`` at ``commit``."""
    from flordb.version.repo import open_repo, repo_path, resolve_commit

    rel = repo_path(path)
    with open_repo(snap_git_dir) as repo:
        commit = resolve_commit(repo, commit)
        try:
            blob = repo.commit(commit).tree / rel
        except KeyError:
            blob = None
        if blob is None or blob.type != "blob":
            raise VersionError(f"{rel!r} is not a file in version {commit[:12]}")
        data = blob.data_stream.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise VersionError(f"{rel!r} in version {commit[:12]} is not UTF-8 text") from None


def list_files(snap_git_dir, commit) -> list[str]:
    """Repository-relative paths of every file in ``commit``, in git's order."""
    from flordb.version.repo import failures, open_repo, resolve_commit, split_nul

    with open_repo(snap_git_dir) as repo, failures():
        commit = resolve_commit(repo, commit)
        return split_nul(repo.git.ls_tree("-r", "-z", "--name-only", "--full-tree", commit, stdout_as_string=False))
