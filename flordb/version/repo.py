"""GitPython, set up once for FlorDB: the rules that keep the user's repository untouched.

Every git access of ``flordb.version`` goes through a :class:`git.Repo` from
:func:`open_repo` or :func:`open_work_tree`. Objects (blobs, commits) are read and written through its
object database; the plumbing that needs git's own rules (``add`` honouring
.gitignore and filters, ``write-tree``, ``checkout-index``) runs as
``repo.git.<command>`` inside :func:`plumbing`, GitPython's
``custom_environment`` naming a temporary index and work tree. So:

- the location variables git would read from the caller (``GIT_DIR``,
  ``GIT_INDEX_FILE``, ``GIT_OBJECT_DIRECTORY``, ...) are always given
  explicitly to commands, never inherited, and hidden while GitPython locates
  a repository (its ``Repo()`` reads some of them);
- ``GIT_OPTIONAL_LOCKS=0``, so no command refreshes the user's index behind
  our back;
- ``core.hooksPath`` points nowhere, so no hook (``post-index-change``
  included) runs, and a few user settings that could make ``git add`` fail,
  write beside the user's index, or change the commit bytes
  (``core.safecrlf``, ``core.splitIndex``, ``commit.gpgSign``,
  ``i18n.commitEncoding``) are overridden or not read;
- commits are built by :func:`write_commit` with a fixed author, committer and
  date, so the id of a commit depends on its tree, parents and message only.

``git`` (GitPython) is imported here only: this module is loaded when a
snapshot is taken or a version read, never on the recording fast path.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
import time
from pathlib import PurePosixPath
from typing import Iterator

from flordb.errors import VersionError

# User settings overridden on every command (see the module docstring).
CONFIG = [
    f"core.hooksPath={os.devnull}",
    "core.safecrlf=false",
    "core.splitIndex=false",  # else writing a temporary index adds sharedindex.* files to .git
    "core.logAllRefUpdates=false",
    "commit.gpgSign=false",
    "i18n.commitEncoding=UTF-8",
    "advice.addEmbeddedRepo=false",
    "init.defaultBranch=main",
    "core.sparseCheckout=false",
]

_NAME, _EMAIL = "flordb", "flordb@localhost"


def _import_git():
    """GitPython, imported on first use; a one-line error where it or git itself is missing."""
    try:
        import git
    except ImportError as e:  # GitPython raises ImportError when it cannot run git
        said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VersionError("cannot use git (FlorDB needs the git command and GitPython to version code):"
                           f" {said}") from None
    return git


# Variables GitPython's Repo() reads from the process when it locates a repository; inherited from a
# git hook or wrapper around the user's script, they would name another repository than ours.
_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY", "GIT_INDEX_FILE")
_environ_lock = threading.Lock()


@contextlib.contextmanager
def _location_cleared() -> Iterator[None]:
    """Hide inherited git location variables while GitPython locates a repository (a millisecond).

    Only when one is set (a script started by a git hook, say); commands never
    need this, as :func:`_environment` names every location explicitly.
    """
    with _environ_lock:
        present = {k: os.environ[k] for k in _LOCATION_VARS if k in os.environ}
        for k in present:
            del os.environ[k]
        try:
            yield
        finally:
            os.environ.update(present)


def open_repo(git_dir):
    """The :class:`git.Repo` of the git directory ``git_dir`` (a ``.git``, a worktree's, or a bare one)."""
    git = _import_git()
    try:
        with _location_cleared():
            repo = git.Repo(os.fspath(git_dir))
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise VersionError(f"{os.fspath(git_dir)} is not a git repository") from None
    repo.git.set_persistent_git_options(c=CONFIG)
    repo.git.update_environment(**_environment(repo))
    return repo


def open_work_tree(top):
    """The :class:`git.Repo` of the work tree ``top``, or None where it is none git can use.

    ``top`` comes from :func:`flordb.store.layout.find_git_top`, the one
    function that decides the project's git top level.
    """
    git = _import_git()
    try:
        with _location_cleared():
            repo = git.Repo(os.fspath(top))
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    if repo.bare or repo.working_tree_dir is None:
        return None
    repo.git.set_persistent_git_options(c=CONFIG)
    repo.git.update_environment(**_environment(repo))
    return repo


def init_bare(path) -> None:
    """Create an empty bare repository at ``path`` (no templates, so no sample hooks)."""
    git = _import_git()
    path = os.path.abspath(os.fspath(path))
    cmd = git.Git(path)
    cmd.update_environment(GIT_DIR=path, GIT_COMMON_DIR=path, GIT_OBJECT_DIRECTORY=os.path.join(path, "objects"))
    with failures(), _location_cleared():  # `git init --bare` refuses an inherited GIT_WORK_TREE
        cmd.init("-q", "--bare", "--template=")


def _environment(repo) -> dict[str, str]:
    """Every location variable git reads, set to this repository's own values (never the caller's)."""
    common = os.path.abspath(repo.common_dir)
    env = {
        "GIT_DIR": os.path.abspath(repo.git_dir),
        "GIT_COMMON_DIR": common,
        "GIT_OBJECT_DIRECTORY": os.path.join(common, "objects"),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": "",
        "GIT_INDEX_FILE": os.path.join(os.devnull, "index"),  # no index unless plumbing() names one
        "GIT_NAMESPACE": "",
        "GIT_PREFIX": "",
        "GIT_IMPLICIT_WORK_TREE": "1",
        "GIT_GRAFT_FILE": os.path.join(common, "info", "grafts"),
        "GIT_SHALLOW_FILE": os.path.join(common, "shallow"),
        "GIT_REPLACE_REF_BASE": "refs/replace/",
        "GIT_NO_REPLACE_OBJECTS": "1",  # read the objects as stored, never a replacement
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_TERMINAL_PROMPT": "0",
    }
    if repo.working_tree_dir is not None and not repo.bare:
        env["GIT_WORK_TREE"] = os.path.abspath(repo.working_tree_dir)
    else:
        env["GIT_WORK_TREE"] = os.path.abspath(repo.git_dir)  # harmless: commands here read no work tree
    return env


@contextlib.contextmanager
def plumbing(repo, *, index, work_tree):
    """GitPython's command object for ``repo``, run in ``work_tree`` against the temporary ``index``.

    Yields a :class:`git.Git` like ``repo.git`` (same options, same explicit
    environment) whose commands run in ``work_tree``, which is also git's
    work tree there; its errors become :class:`VersionError` s.
    """
    import git

    cmd = git.Git(os.fspath(work_tree))
    cmd.set_persistent_git_options(c=CONFIG)
    cmd.update_environment(**repo.git.environment())
    with cmd.custom_environment(GIT_INDEX_FILE=os.fspath(index), GIT_WORK_TREE=os.fspath(work_tree)), failures():
        yield cmd


@contextlib.contextmanager
def failures() -> Iterator[None]:
    """GitPython's errors as one-line :class:`VersionError` s saying what git said."""
    import git

    try:
        yield
    except git.GitCommandNotFound:
        raise VersionError("git is not installed or not on PATH; FlorDB needs it to version code") from None
    except git.GitCommandError as e:
        raise VersionError(_one_line(e)) from None


def _one_line(e) -> str:
    stderr = e.stderr if isinstance(e.stderr, str) else os.fsdecode(e.stderr or b"")
    stderr = stderr.strip().removeprefix("stderr:").strip().strip("'")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.strip().startswith("hint:")]
    said = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[0] if lines else "")
    argv = [a for a in (e.command if isinstance(e.command, list) else [e.command]) if isinstance(a, str)]
    command = next((a for a in _subcommands(argv[1:])), "")
    return f"git {command} failed: {said or f'exit status {e.status}'}".replace("  ", " ")


def _subcommands(argv):
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--git-dir", "--work-tree", "-C", "-c"):
            skip = True
        elif not a.startswith("-"):
            yield a


def stdin(data: bytes):
    """A file holding ``data``, to hand a git command as its standard input (GitPython's ``istream``)."""
    f = tempfile.TemporaryFile()
    f.write(data)
    f.seek(0)
    return f


def split_nul(out: bytes | str) -> list[str]:
    """Split ``-z`` output into file-system-decoded paths."""
    if isinstance(out, str):
        out = os.fsencode(out)
    return [os.fsdecode(p) for p in out.split(b"\0") if p]


def resolve_commit(repo, rev: str) -> str:
    """Full id of the commit ``rev`` names, or VersionError."""
    try:
        obj = repo.rev_parse(rev)  # reads the object's header: a missing object fails here
        while obj.type == "tag":
            obj = obj.object
        if obj.type == "commit" and repo.odb.info(obj.binsha).type == b"commit":  # the null id passes the former
            return obj.hexsha
    except Exception:
        pass
    raise VersionError(f"no commit {rev!r} in {repo.git_dir}")


def write_blob(repo, data: bytes) -> str:
    """Store ``data`` as a blob in the object database, as is (no filters); return its id."""
    from gitdb import IStream
    from gitdb.db.loose import LooseObjectDB

    return LooseObjectDB.store(repo.odb, IStream("blob", len(data), io.BytesIO(data))).hexsha.decode("ascii")


def write_commit(repo, tree: str, message: str, parents: tuple[str, ...] = ()) -> str:
    """Store (deterministically) the commit of ``tree``; no hooks, no signing. Return its id.

    The bytes are those ``git commit-tree -m <message>`` writes with the
    fixed identity and date, so ids match snapshots taken by earlier FlorDB
    versions.
    """
    from git import Actor, Commit
    from gitdb import IStream
    from gitdb.db.loose import LooseObjectDB
    from git.objects.tree import Tree
    from gitdb.util import hex_to_bin

    me = Actor(_NAME, _EMAIL)
    commit = Commit(
        repo,
        Commit.NULL_BIN_SHA,
        Tree(repo, hex_to_bin(tree)),
        me,
        0,
        0,
        me,
        0,
        0,
        message + "\n",
        [Commit(repo, hex_to_bin(p)) for p in parents],
        "UTF-8",
    )
    stream = io.BytesIO()
    commit._serialize(stream)
    data = stream.getvalue()
    # gitdb's loose-object writer, in process (the command database would start `git hash-object`)
    return LooseObjectDB.store(repo.odb, IStream("commit", len(data), io.BytesIO(data))).hexsha.decode("ascii")


def keep_ref(repo, ref: str, commit: str) -> None:
    """Point ``ref`` at ``commit`` so gc keeps it; tolerate a racing writer of the same value."""
    last: VersionError | None = None
    for attempt in range(6):
        try:
            with failures():
                repo.git.update_ref(ref, commit)
            return
        except VersionError as e:  # typically "cannot lock ref": another process writes it now
            last = e
            with contextlib.suppress(Exception):
                if repo.commit(ref).hexsha == commit:
                    return
            time.sleep(0.02 * (attempt + 1))
    assert last is not None
    raise last


def repo_path(path) -> str:
    """Normalize a repository-relative path to ``a/b/c`` form; refuse escapes."""
    p = PurePosixPath(os.fspath(path).replace(os.sep, "/"))
    parts = [s for s in p.parts if s not in ("", ".")]
    if p.is_absolute() or not parts or ".." in parts:
        raise VersionError(f"{os.fspath(path)!r} is not a path relative to the repository top")
    return "/".join(parts)
