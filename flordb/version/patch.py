"""Record a patched version: a commit whose parent is the original snapshot.

Hindsight replays a historical version with one statement inserted; the
patched code is stored as a commit on ``refs/flordb/patched/<id>`` so that
every replayed value has provenance (``git diff <snapshot> <id>`` shows the
patch). Like snapshots, patched commits are deterministic.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

from flordb.errors import VersionError
from flordb.version._git import commit_tree, git, git_text, keep_ref, repo_path, resolve_commit

PATCHED_REF = "refs/flordb/patched/"


def commit_patched(snap_git_dir, parent, files: Mapping[str, str], message) -> str:
    """Commit the tree of ``parent`` with ``files`` (path -> new text) replaced.

    New paths are added as regular files; replaced files keep their mode.
    Texts are stored as given (UTF-8, no end-of-line conversion), matching
    what :func:`flordb.version.read_file` returns. Same parent, files and
    message give the same id. Returns the new commit id.
    """
    parent = resolve_commit(snap_git_dir, parent)
    texts = {repo_path(p): t for p, t in files.items()}
    with tempfile.TemporaryDirectory(prefix="flordb-patch-") as tmp:
        gitargs = ("--git-dir", snap_git_dir, "--work-tree", tmp)
        env = {"GIT_INDEX_FILE": os.path.join(tmp, ".index")}
        git(*gitargs, "read-tree", parent, cwd=tmp, env=env)
        if texts:
            paths = list(texts)
            modes = _modes(gitargs, parent, paths, tmp)
            blobs = []
            for i, p in enumerate(paths):
                blob = os.path.join(tmp, f"blob{i}")
                with open(blob, "wb") as f:
                    f.write(texts[p].encode("utf-8"))
                blobs.append(blob)
            ids = git_text(*gitargs, "hash-object", "-w", "--no-filters", "--stdin-paths",
                           cwd=tmp, input="\n".join(blobs).encode()).split("\n")  # fmt: skip
            info = b"".join(os.fsencode(f"{modes.get(p, '100644')} {oid}\t{p}") + b"\0" for p, oid in zip(paths, ids))
            git(*gitargs, "update-index", "--add", "-z", "--index-info", cwd=tmp, env=env, input=info)
        tree = git_text(*gitargs, "write-tree", cwd=tmp, env=env)
    commit = commit_tree(snap_git_dir, tree, str(message), parents=(parent,))
    keep_ref(snap_git_dir, PATCHED_REF + commit, commit)
    return commit


def _modes(gitargs, parent: str, paths: list[str], cwd) -> dict[str, str]:
    """Modes of those ``paths`` that are regular files in ``parent``."""
    out = git(*gitargs, "ls-tree", "-z", "--full-tree", parent, "--", *paths, cwd=cwd)
    modes = {}
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        mode, kind, _oid = meta.decode().split(" ")
        path = os.fsdecode(name)
        if kind != "blob" or mode not in ("100644", "100755"):
            raise VersionError(f"cannot patch {path!r}: it is a {kind} with mode {mode} in {parent[:12]}")
        modes[path] = mode
    return modes
