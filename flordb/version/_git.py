"""Run git for FlorDB: one runner, one environment, one fixed identity.

Every git call of ``flordb.version`` goes through :func:`git`, so the rules
that keep the user's repository untouched live in one place:

- location variables (``GIT_DIR``, ``GIT_INDEX_FILE``, ...) inherited from the
  caller are dropped; callers name the git dir, work tree and index explicitly;
- ``GIT_OPTIONAL_LOCKS=0``, so no command refreshes the user's index behind
  our back;
- ``core.hooksPath`` points nowhere, so no hook (``post-index-change``
  included) runs, and a few user settings that could make ``git add`` fail,
  write beside the user's index, or change the commit bytes
  (``core.safecrlf``, ``core.splitIndex``, ``commit.gpgSign``,
  ``i18n.commitEncoding``) are overridden;
- commits are made with a fixed author, committer and date, so the id of a
  commit depends on its tree, parent and message only.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import PurePosixPath

from flordb.errors import VersionError

# Same tree + same parent + same message -> same commit id, on any machine.
IDENTITY = {
    "GIT_AUTHOR_NAME": "flordb",
    "GIT_AUTHOR_EMAIL": "flordb@localhost",
    "GIT_AUTHOR_DATE": "1970-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "flordb",
    "GIT_COMMITTER_EMAIL": "flordb@localhost",
    "GIT_COMMITTER_DATE": "1970-01-01T00:00:00+0000",
}

# Variables that would point git at another repository, index or object store
# than the one a caller names on the command line.
_LOCATION_VARS = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_PREFIX",
        "GIT_NAMESPACE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_GRAFT_FILE",
        "GIT_SHALLOW_FILE",
        "GIT_REPLACE_REF_BASE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_QUARANTINE_PATH",
    }
)

# User settings overridden on every call (see the module docstring).
_CONFIG = (
    "-c", f"core.hooksPath={os.devnull}",
    "-c", "core.safecrlf=false",
    "-c", "core.splitIndex=false",  # else writing a temporary index adds sharedindex.* files to .git
    "-c", "core.logAllRefUpdates=false",
    "-c", "commit.gpgSign=false",
    "-c", "i18n.commitEncoding=UTF-8",
    "-c", "advice.addEmbeddedRepo=false",
    "-c", "init.defaultBranch=main",
)  # fmt: skip


def _base_env() -> dict[str, str]:
    # Built per call (cheap): the caller's environment may change between calls.
    env = {k: v for k, v in os.environ.items() if k not in _LOCATION_VARS}
    env.update(GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
    return env


class GitFailed(VersionError):
    """A git command exited non-zero; ``stderr`` holds what git said."""

    def __init__(self, args, returncode: int, stderr: str):
        self.argv = [os.fspath(a) for a in args]
        self.returncode = returncode
        self.stderr = stderr
        lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("hint:")]
        said = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[0] if lines else "")
        command = next((a for a in self._commands(self.argv)), "")
        super().__init__(f"git {command} failed: {said or f'exit status {returncode}'}".replace("  ", " "))

    @staticmethod
    def _commands(argv):
        """The git subcommand in ``argv`` (skipping ``--git-dir X`` style options)."""
        skip = False
        for a in argv:
            if skip:
                skip = False
            elif a in ("--git-dir", "--work-tree", "-C", "-c"):
                skip = True
            elif not a.startswith("-"):
                yield a


def git(*args, cwd=None, env=None, input: bytes | None = None) -> bytes:
    """Run ``git <args>`` and return its stdout; raise :class:`GitFailed` on failure.

    ``env`` adds variables (``GIT_INDEX_FILE``, the identity) to the cleaned
    environment; it never inherits the caller's location variables.
    """
    full_env = _base_env()
    if env:
        full_env.update(env)
    argv = ["git", *_CONFIG, *map(os.fspath, args)]
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=full_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
        )
    except FileNotFoundError:
        raise VersionError("git is not installed or not on PATH; FlorDB needs it to version code") from None
    if proc.returncode != 0:
        raise GitFailed(args, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


def git_text(*args, **kwargs) -> str:
    """:func:`git` with stdout decoded and the trailing newline removed."""
    return os.fsdecode(git(*args, **kwargs)).rstrip("\n")


def split_nul(out: bytes) -> list[str]:
    """Split ``-z`` output into file-system-decoded paths."""
    return [os.fsdecode(p) for p in out.split(b"\0") if p]


def resolve_commit(git_dir, rev: str) -> str:
    """Full id of the commit ``rev`` names in ``git_dir``, or VersionError."""
    try:
        return git_text("--git-dir", git_dir, "rev-parse", "-q", "--verify", f"{rev}^{{commit}}")
    except GitFailed:
        raise VersionError(f"no commit {rev!r} in {os.fspath(git_dir)}") from None


def commit_tree(git_dir, tree: str, message: str, parents: tuple[str, ...] = ()) -> str:
    """Create (deterministically) the commit of ``tree``; no hooks, no signing."""
    args = ["--git-dir", git_dir, "commit-tree", "--no-gpg-sign", tree]
    for p in parents:
        args += ["-p", p]
    return git_text(*args, "-m", message, env=IDENTITY)


def keep_ref(git_dir, ref: str, commit: str) -> None:
    """Point ``ref`` at ``commit`` so gc keeps it; tolerate a racing writer of the same value."""
    last: GitFailed | None = None
    for attempt in range(6):
        try:
            git("--git-dir", git_dir, "update-ref", ref, commit)
            return
        except GitFailed as e:  # typically "cannot lock ref": another process writes it now
            last = e
            try:
                if git_text("--git-dir", git_dir, "rev-parse", "-q", "--verify", ref) == commit:
                    return
            except GitFailed:
                pass
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
