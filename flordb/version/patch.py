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

PATCHED_REF = "refs/flordb/patched/"


def commit_patched(snap_git_dir, parent, files: Mapping[str, str], message) -> str:
    """Commit the tree of ``parent`` with ``files`` (path -> new text) replaced.

    New paths are added as regular files; replaced files keep their mode.
    Texts are stored as given (UTF-8, no end-of-line conversion), matching
    what :func:`flordb.version.read_file` returns. Same parent, files and
    message give the same id. Returns the new commit id.
    """
    from flordb.version.repo import keep_ref, open_repo, plumbing, repo_path, resolve_commit, stdin, write_blob
    from flordb.version.repo import write_commit

    with open_repo(snap_git_dir) as repo:
        parent = resolve_commit(repo, parent)
        texts = {repo_path(p): t for p, t in files.items()}
        with tempfile.TemporaryDirectory(prefix="flordb-patch-") as tmp:
            with plumbing(repo, index=os.path.join(tmp, ".index"), work_tree=tmp) as g:
                g.read_tree(parent)
                if texts:
                    modes = _modes(g, parent, list(texts))
                    ids = {p: write_blob(repo, t.encode("utf-8")) for p, t in texts.items()}
                    info = b"".join(os.fsencode(f"{modes.get(p, '100644')} {oid}\t{p}") + b"\0"
                                    for p, oid in ids.items())
                    g.update_index("--add", "-z", "--index-info", istream=stdin(info))
                tree = g.write_tree()
        commit = write_commit(repo, tree, str(message), parents=(parent,))
        keep_ref(repo, PATCHED_REF + commit, commit)
    return commit


def _modes(g, parent: str, paths: list[str]) -> dict[str, str]:
    """Modes of those ``paths`` that are regular files in ``parent`` (``g``: plumbing)."""
    out = g.ls_tree("-z", "--full-tree", parent, "--", *paths, stdout_as_string=False)
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
