"""Issue 11, failure 8: the snapshot stores what is on disk, whatever the index says.

Files marked skip-worktree or assume-unchanged, and a submodule with changes
in its working tree, are snapshotted as they are on disk; the user's index,
HEAD and files stay byte-identical; a sparse checkout's absent files stay as
committed.
"""

from __future__ import annotations

import pytest

from conftest import git, git_state, make_project
from flordb.version import list_files, read_file, snapshot


@pytest.mark.parametrize("flag", ["--skip-worktree", "--assume-unchanged"])
def test_flagged_files_are_snapshotted_as_on_disk(project, flag, tmp_path):
    (project / "train.py").write_text("lr = 0.1\n")
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    (project / "train.py").write_text("lr = 0.5  # what ran\n")
    git(project, "update-index", flag, "train.py")
    before = git_state(project)
    snap = snapshot(project, tmp_path / "private")
    assert read_file(snap.git_dir, snap.commit, "train.py") == "lr = 0.5  # what ran\n"
    assert git_state(project) == before
    assert git(project, "ls-files", "-v", "train.py")[0] in "Sh"  # the user's flag is still set


def test_a_dirty_submodule_is_snapshotted_as_its_files(tmp_path):
    sub = make_project(tmp_path / "lib")
    (sub / "layers.py").write_text("WIDTH = 8\n")
    git(sub, "add", "layers.py")
    git(sub, "commit", "-q", "-m", "layers")
    proj = make_project(tmp_path / "proj")
    git(proj, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "lib")
    git(proj, "commit", "-q", "-m", "add lib")
    clean = snapshot(proj, tmp_path / "private")
    assert "lib" in list_files(clean.git_dir, clean.commit)  # clean: the commit pointer says it all

    (proj / "lib" / "layers.py").write_text("WIDTH = 16  # edited in place\n")
    (proj / "lib" / "extra.py").write_text("X = 1\n")
    before = git_state(proj)
    sub_index = (proj / ".git" / "modules" / "lib" / "index").read_bytes()
    snap = snapshot(proj, tmp_path / "private")
    assert read_file(snap.git_dir, snap.commit, "lib/layers.py") == "WIDTH = 16  # edited in place\n"
    assert read_file(snap.git_dir, snap.commit, "lib/extra.py") == "X = 1\n"
    assert read_file(snap.git_dir, snap.commit, "README.md") == "test project\n"
    assert git_state(proj) == before
    assert (proj / ".git" / "modules" / "lib" / "index").read_bytes() == sub_index


def test_sparse_checkout_absent_files_stay_as_committed(project, tmp_path):
    (project / "keep").mkdir()
    (project / "keep" / "a.py").write_text("a\n")
    (project / "away").mkdir()
    (project / "away" / "b.py").write_text("b\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "two dirs")
    git(project, "sparse-checkout", "set", "keep")
    assert not (project / "away" / "b.py").exists()
    before = git_state(project)
    snap = snapshot(project, tmp_path / "private")
    assert read_file(snap.git_dir, snap.commit, "away/b.py") == "b\n"
    assert git_state(project) == before
