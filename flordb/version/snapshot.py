"""Snapshot the working tree into a commit without touching the user's repository.

A snapshot is what is on disk at run start: tracked files with their
uncommitted changes (deleted tracked files are absent), untracked files that
.gitignore does not ignore, minus the FlorDB store (``.flordb/``) and untracked
files over a size limit. It is written with plumbing only (``add`` into a
temporary index, ``write-tree``, a commit written to the object database,
``update-ref``), through GitPython (:mod:`flordb.version.repo`), so the
user's branch, HEAD, index and files stay exactly as they were and no hook
runs. The commit has no parent and a fixed identity and date: identical code
gives the identical commit id, whatever the user's HEAD. It is kept alive by
the ref ``refs/flordb/snapshots/<id>``.

Outside a git repository the same is done in a private git directory (for
example ``<project>/.flordb/git``) whose work tree is the project directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flordb.errors import VersionError
from flordb.store.layout import find_git_top as layout_git_top

SNAPSHOT_REF = "refs/flordb/snapshots/"
SNAPSHOT_MESSAGE = "flordb snapshot"

# Extra lines for a private repository's info/exclude: a project outside git
# has no .gitignore to keep caches out of its snapshots.
_PRIVATE_EXCLUDES = ("__pycache__/", "*.py[cod]", ".ipynb_checkpoints/", ".venv/")


@dataclass(frozen=True)
class Snapshot:
    """One code version: the snapshot commit and where it came from.

    ``head`` and ``branch`` record the user's position at snapshot time; they
    are not part of the commit, so that identical files give the identical
    ``commit`` on any branch.
    """

    commit: str  # 40-hex id of the snapshot commit: the "version"
    git_dir: str  # the git directory holding it (the user's .git, or the private one)
    work_tree: str  # the snapshotted directory (git top level, or the project dir)
    head: str | None  # user's HEAD commit at the time (None in an empty repo / private)
    branch: str | None  # user's branch name (None when detached / private)
    skipped: tuple[str, ...]  # untracked files left out for size (repo-relative paths)
    private: bool  # True when outside any git repository


def find_git_top(path) -> Path | None:
    """The top level of the git work tree containing ``path``, else None.

    Decided by :func:`flordb.store.layout.find_git_top` (the store lives there
    too, so the two can never disagree); ``snapshot`` opens that top level
    with GitPython for its directories, and a repository git refuses to use
    (``safe.directory``) is an error, not "no repository".
    """
    top = layout_git_top(Path(path).resolve())
    return None if top is None else top.resolve()


def snapshot(
    work_tree,
    private_git_dir,
    *,
    max_untracked_bytes: int | None = 10 * 2**20,
    exclude=(".flordb",),
    keep_out=(),
) -> Snapshot:
    """Write the working tree as a commit on ``refs/flordb/snapshots/<id>``.

    Inside a git repository the whole top level is snapshotted into the
    user's object database (``private_git_dir`` is unused); outside one,
    into ``private_git_dir`` (created on first use). Paths whose first
    component is in ``exclude`` and untracked files larger than
    ``max_untracked_bytes`` (None: no limit) are left out; the latter are
    listed in ``Snapshot.skipped``. ``keep_out`` are directories to leave out
    wherever they are inside the tree (a store kept in the project under
    another name than ``.flordb``: its segments are not code).
    """
    work_tree = Path(work_tree).resolve()
    if not work_tree.is_dir():
        raise VersionError(f"cannot snapshot {work_tree}: not a directory")
    exclude = tuple(dict.fromkeys(exclude))
    from flordb.version.repo import keep_ref, open_work_tree

    top = find_git_top(work_tree)
    repo = None if top is None else open_work_tree(top)
    if repo is None:  # not a repository, a bare one, or inside a .git directory
        paths = _inside(keep_out, work_tree, exclude)
        return _snapshot_private(work_tree, Path(private_git_dir).resolve(), max_untracked_bytes, exclude, paths)

    with repo:
        top = os.path.abspath(repo.working_tree_dir)
        paths = _inside(keep_out, Path(top), exclude)
        git_dir, common_dir = os.path.abspath(repo.git_dir), os.path.abspath(repo.common_dir)
        ensure_excluded(Path(common_dir) / "info" / "exclude", _patterns(exclude, paths))
        head, branch = _user_position(repo)
        with tempfile.TemporaryDirectory(prefix="flordb-index-") as tmp:
            tmp_index = os.path.join(tmp, "index")
            commit, skipped = _write_commit(repo, top, os.path.join(git_dir, "index"), tmp_index, exclude + paths,
                                            max_untracked_bytes)  # fmt: skip
        keep_ref(repo, SNAPSHOT_REF + commit, commit)
    return Snapshot(commit, common_dir, top, head, branch, skipped, False)


def _inside(paths, root: Path, exclude: tuple[str, ...]) -> tuple[str, ...]:
    """``paths`` that lie strictly inside ``root`` and not under ``exclude``, relative to it."""
    out = []
    for p in paths:
        try:
            rel = Path(p).resolve().relative_to(root.resolve()).as_posix()
        except (ValueError, OSError):
            continue
        if rel != "." and rel.split("/", 1)[0] not in exclude:
            out.append(rel)
    return tuple(out)


def _patterns(exclude: tuple[str, ...], paths: tuple[str, ...]) -> list[str]:
    """Exclude-file lines: a name in ``exclude`` is left out anywhere, each of ``paths`` only there (anchored)."""
    return [f"{name}/" for name in exclude] + [f"/{p}/" for p in paths]


def _snapshot_private(work_tree: Path, gdir: Path, max_bytes, exclude, paths=()) -> Snapshot:
    from flordb.version.repo import keep_ref, open_repo

    _init_private(gdir)
    ensure_excluded(gdir / "info" / "exclude", _patterns(exclude, paths) + list(_PRIVATE_EXCLUDES))
    # A private git dir placed inside the work tree, but not under an excluded
    # directory, must not snapshot itself.
    own: tuple[str, ...] = ()
    with contextlib.suppress(ValueError):
        rel = gdir.relative_to(work_tree).as_posix()
        if rel != "." and rel.split("/", 1)[0] not in exclude:
            own = (rel,)
    with open_repo(gdir) as repo:
        # The temporary index lives in the private dir, so that it can replace the
        # persistent one atomically and keep git's stat cache warm for next time.
        with tempfile.TemporaryDirectory(prefix="tmp-index-", dir=gdir) as tmp:
            tmp_index = os.path.join(tmp, "index")
            commit, skipped = _write_commit(repo, work_tree, gdir / "index", tmp_index, exclude + paths, max_bytes, own)
            os.replace(tmp_index, gdir / "index")
        keep_ref(repo, SNAPSHOT_REF + commit, commit)
    return Snapshot(commit, str(gdir), str(work_tree), None, None, skipped, True)


def _write_commit(repo, top, seed_index, tmp_index, exclude, max_bytes, own=()) -> tuple[str, tuple[str, ...]]:
    """Add the work tree ``top`` to a copy of ``seed_index``; return (commit id, skipped).

    Untracked files under ``exclude`` are already ignored through info/exclude
    (naming an ignored path in an exclude pathspec makes ``git add`` fail);
    tracked ones are removed from the temporary index after the add. ``own``
    are further untracked paths to leave out (a private git dir).
    """
    from flordb.version.repo import plumbing, split_nul, stdin, write_commit

    if os.path.exists(seed_index):
        shutil.copy2(seed_index, tmp_index)  # keeps mtime: git's racy-entry check stays right
    with plumbing(repo, index=tmp_index, work_tree=top) as g:
        skipped: list[str] = []
        if max_bytes is not None:
            untracked = split_nul(g.ls_files("-z", "--others", "--exclude-standard", stdout_as_string=False))
            for rel in untracked:
                if rel.split("/", 1)[0] in exclude:
                    continue
                try:
                    st = os.lstat(os.path.join(top, rel))
                except FileNotFoundError:  # removed meanwhile
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
                    skipped.append(rel)

        drop = [f":(top,exclude,literal){p}" for p in (*own, *skipped)]
        spec = b"\0".join(map(os.fsencode, [":/", *drop]))
        g.add("-A", "--pathspec-from-file=-", "--pathspec-file-nul", istream=stdin(spec))
        if exclude:  # tracked files under an excluded directory (seeded from the user's index)
            spec = b"\0".join(os.fsencode(f":(top,literal){p}") for p in exclude)
            g.rm("--cached", "-r", "-f", "-q", "--ignore-unmatch", "--pathspec-from-file=-", "--pathspec-file-nul",
                 istream=stdin(spec))  # fmt: skip
        _take_what_is_on_disk(g, top)
        tree = g.write_tree()
    commit = write_commit(repo, tree, SNAPSHOT_MESSAGE)
    return commit, tuple(skipped)


def _take_what_is_on_disk(g, top) -> None:
    """Where the user's index hides the files on disk, the temporary index takes the files.

    ``git add`` leaves entries marked skip-worktree or assume-unchanged as
    committed, and a submodule as its commit pointer, though the script ran
    what is on disk. Flags are cleared (in the temporary index only) for
    files that exist, so a sparse checkout's absent files stay as committed;
    a submodule whose working tree has changes is stored as its files.
    Runs inside the caller's :func:`~flordb.version.repo.plumbing` block.
    """
    from flordb.version.repo import split_nul

    # One listing: "<tag> <mode> <id> <stage>\t<path>"; tag S = skip-worktree, lower case = assume-unchanged.
    out = g.ls_files("-s", "-v", "-z", stdout_as_string=False)
    listed = [(ln[:1], *ln[2:].split("\t", 1)) for ln in split_nul(out)]
    flagged = [path for tag, _, path in listed if tag == "S" or tag.islower()]
    present = [p for p in flagged if os.path.lexists(os.path.join(top, p))]
    entries = [e for e in (_file_entry(top, p) for p in present) if e is not None]
    if entries:  # fresh index entries: the flags go, the content is what is on disk
        _index_files(g, entries, filters=True)
    for _, meta, path in listed:
        if meta.startswith("160000 ") and os.path.exists(os.path.join(top, path, ".git")):
            _embed_dirty_submodule(g, top, path)


def _embed_dirty_submodule(g, top, path: str) -> None:
    """Replace the gitlink ``path`` by the files of its working tree, if they differ from its commit."""
    from flordb.version.repo import failures, open_work_tree, split_nul

    sub = open_work_tree(os.path.join(top, path))
    if sub is None:
        return
    own_index = os.path.join(os.path.abspath(sub.git_dir), "index")  # read only: GIT_OPTIONAL_LOCKS=0
    with sub, sub.git.custom_environment(GIT_INDEX_FILE=own_index), failures():
        status = sub.git.status("--porcelain", "-z", "--untracked-files=normal", "--ignore-submodules=all",
                                stdout_as_string=False)
        if not status:
            return  # clean: the commit pointer says exactly what is on disk
        files = split_nul(sub.git.ls_files("-z", "--cached", "--others", "--exclude-standard", stdout_as_string=False))
    entries = [e for e in (_file_entry(top, f"{path}/{rel}") for rel in dict.fromkeys(files)) if e is not None]
    if entries:
        _index_files(g, entries, filters=False, remove=path)


def _file_entry(top, rel: str) -> tuple[str, str] | None:
    """(path, mode) of a regular file on disk; None when absent or not a regular file."""
    try:
        st = os.lstat(os.path.join(top, rel))
    except OSError:
        return None  # deleted on disk: absent from the snapshot, as for any deleted file
    if not stat.S_ISREG(st.st_mode) or "\n" in rel:
        return None
    return rel, "100755" if st.st_mode & 0o111 else "100644"


def _index_files(g, entries, *, filters: bool, remove: str | None = None) -> None:
    """Write the files' bytes into the object database and put them in the temporary index (``g``: plumbing)."""
    from flordb.version.repo import stdin

    args = ["-w", "--stdin-paths"] + ([] if filters else ["--no-filters"])
    paths = "".join(f"{rel}\n" for rel, _ in entries).encode()
    shas = g.hash_object(*args, istream=stdin(paths)).split("\n")
    info = [f"0 {'0' * 40}\t{remove}"] if remove else []
    info += [f"{mode} {sha}\t{rel}" for (rel, mode), sha in zip(entries, shas)]
    g.update_index("--index-info", istream=stdin("".join(f"{ln}\n" for ln in info).encode()))


def _user_position(repo) -> tuple[str | None, str | None]:
    """(HEAD commit, branch name) of the user's repository; None where absent (read, never written)."""
    try:
        head = repo.head.commit.hexsha
    except Exception:
        head = None  # no commit yet
    try:
        branch = None if repo.head.is_detached else repo.head.reference.name
    except Exception:
        branch = None
    return head, branch


def _init_private(gdir: Path) -> None:
    """Create the private git directory once, safely against concurrent callers.

    It is made under a temporary name and renamed into place: a racing
    process either wins the rename or finds the directory complete.
    """
    if (gdir / "HEAD").exists():
        return
    gdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{gdir.name}.init-", dir=gdir.parent))
    try:
        from flordb.version.repo import init_bare

        init_bare(tmp)
        (tmp / "info").mkdir(exist_ok=True)
        try:
            os.rename(tmp, gdir)
        except OSError:
            if not (gdir / "HEAD").exists():
                raise VersionError(f"cannot create the private git directory {gdir}: it exists and is not one")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_excluded(exclude_file: Path, lines: list[str]) -> None:
    """Append each of ``lines`` to a git exclude file unless present (in any anchoring)."""

    def missing(text: str) -> list[str]:
        have = {ln.strip().strip("/") for ln in text.splitlines()}
        return [ln for ln in lines if ln.strip("/") not in have]

    with contextlib.suppress(FileNotFoundError):
        if not missing(exclude_file.read_text(encoding="utf-8", errors="replace")):
            return  # the common case: nothing to write, no lock needed
    try:
        exclude_file.parent.mkdir(parents=True, exist_ok=True)
        with open(exclude_file, "a+", encoding="utf-8", errors="replace") as f:
            _lock(f)
            f.seek(0)
            text = f.read()
            todo = missing(text)
            if todo:
                prefix = "" if not text or text.endswith("\n") else "\n"
                f.write(prefix + "".join(f"{ln}\n" for ln in todo))
                f.flush()
    except OSError as e:
        raise VersionError(f"cannot add {', '.join(lines)} to {exclude_file}: {e.strerror}") from None


def _lock(f) -> None:
    """Exclusive lock until ``f`` closes (where the platform has one)."""
    try:
        import fcntl
    except ImportError:  # Windows: a duplicate line is harmless
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
