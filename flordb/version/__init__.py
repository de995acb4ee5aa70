"""Code versions as git commits that never touch the user's repository.

``snapshot`` writes the working tree (tracked and untracked files, honouring
.gitignore, without ``.flordb/`` or oversized untracked files) as a commit on
``refs/flordb/snapshots/<id>``, in the user's repository or, outside one, in a
private git directory. ``materialize``, ``read_file`` and ``list_files`` read
a version back; ``commit_patched`` records a patched version whose parent is
the snapshot. See DESIGN.md, decision 2.
"""

from flordb.version.materialize import list_files, materialize, read_file
from flordb.version.patch import PATCHED_REF, commit_patched
from flordb.version.snapshot import SNAPSHOT_REF, Snapshot, find_git_top, snapshot

__all__ = [
    "Snapshot",
    "snapshot",
    "find_git_top",
    "materialize",
    "read_file",
    "list_files",
    "commit_patched",
    "SNAPSHOT_REF",
    "PATCHED_REF",
]
