"""Issue 11, failure 8: the snapshot stores what is on disk, whatever the index says.

Files marked skip-worktree or assume-unchanged, and a submodule with changes
in its working tree, are snapshotted as they are on disk; the user's index,
HEAD and files stay byte-identical; a sparse checkout's absent files stay as
committed. Git location variables inherited from a hook or wrapper
(``GIT_DIR``, ``GIT_INDEX_FILE``, ...) never redirect a snapshot, and without
git on PATH a run still trains and records, saying why in one line.
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


def test_git_location_variables_of_a_hook_or_wrapper_do_not_redirect_the_snapshot(project, tmp_path, monkeypatch):
    """A script run from a git hook or wrapper inherits GIT_DIR, GIT_INDEX_FILE, ...: they name another repository."""
    other = make_project(tmp_path / "other")
    other_state = git_state(other)
    other_index = (other / ".git" / "index").read_bytes()
    (project / "train.py").write_text("print('ran')\n")
    before = git_state(project)
    for var, value in {"GIT_DIR": other / ".git", "GIT_WORK_TREE": other, "GIT_INDEX_FILE": other / ".git" / "index",
                       "GIT_OBJECT_DIRECTORY": other / ".git" / "objects", "GIT_COMMON_DIR": other / ".git",
                       "GIT_NAMESPACE": "elsewhere", "GIT_ALTERNATE_OBJECT_DIRECTORIES": other / ".git" / "objects",
                       }.items():  # fmt: skip
        monkeypatch.setenv(var, str(value))
    snap = snapshot(project, tmp_path / "private")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
                "GIT_NAMESPACE", "GIT_ALTERNATE_OBJECT_DIRECTORIES"):  # fmt: skip
        monkeypatch.delenv(var)
    assert snap.git_dir == str((project / ".git").resolve()) and not snap.private
    assert read_file(snap.git_dir, snap.commit, "train.py") == "print('ran')\n"
    assert git(project, "rev-parse", f"refs/flordb/snapshots/{snap.commit}") == snap.commit
    assert git(other, "for-each-ref", "refs/flordb") == "" and git(other, "cat-file", "-t", snap.commit,
                                                                       check=False) == ""
    assert git_state(project) == before and git_state(other) == other_state
    assert (other / ".git" / "index").read_bytes() == other_index


def test_without_git_a_run_trains_records_and_says_why_in_one_line(project):
    import sys

    from conftest import q, record

    proc = record(project, "import flordb as flor\nfor e in flor.loop('epoch', range(3)):\n    flor.log('x', e)\n",
                  env={"PATH": str(project / "no-such-bin")})
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "snapshot" in ln]
    assert len(said) == 1 and "git" in said[0], proc.stderr
    assert sys.executable  # the script ran with an absolute interpreter path, git unreachable
    assert sorted(q(project, "SELECT x FROM logs")["x"].tolist()) == [0, 1, 2]


def test_location_variables_do_not_redirect_a_private_snapshot(tmp_path, monkeypatch):
    other = make_project(tmp_path / "other")
    other_state = git_state(other)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    project = tmp_path / "plain"
    project.mkdir()
    (project / "train.py").write_text("print(1)\n")
    for var, value in {"GIT_DIR": other / ".git", "GIT_WORK_TREE": other,
                       "GIT_INDEX_FILE": other / ".git" / "index"}.items():  # fmt: skip
        monkeypatch.setenv(var, str(value))
    snap = snapshot(project, project / ".flordb" / "git")
    assert snap.private and snap.git_dir == str((project / ".flordb" / "git").resolve())
    assert read_file(snap.git_dir, snap.commit, "train.py") == "print(1)\n"
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var)
    assert git_state(other) == other_state and not (project / ".git").exists()
