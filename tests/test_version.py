"""flordb.version on throwaway repositories: snapshots never touch the user's state."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flordb.errors import VersionError
from flordb.version import (
    PATCHED_REF,
    SNAPSHOT_REF,
    commit_patched,
    find_git_top,
    list_files,
    materialize,
    read_file,
    snapshot,
)

# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory, monkeypatch):
    """No global/system git config, no identity: FlorDB must not rely on them."""
    home = tmp_path_factory.mktemp("home")
    (home / "gitconfig").write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("HOME", str(home))
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL",
                "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


def git(cwd, *args: str) -> str:
    """Run git as a test user would (identity given on the command line)."""
    cmd = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # `git status` must not refresh the index
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())


def tree_hashes(root: Path, skip=(".git",)) -> dict[str, str]:
    """sha256 of every file under root (relative posix path -> hash)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if (rel_dir / d).as_posix() not in skip]
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if rel not in skip:
                out[rel] = hashlib.sha256((Path(dirpath) / name).read_bytes()).hexdigest()
    return out


def git_state(repo: Path) -> dict:
    """Everything a snapshot must leave alone: branch, HEAD, refs, index, status, files."""
    index = repo / ".git" / "index"
    state = {
        "index": (hashlib.sha256(index.read_bytes()).hexdigest(), index.stat().st_mtime_ns)
        if index.exists()
        else None,
        "head_file": (repo / ".git" / "HEAD").read_text(),
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"),
        "status": git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored"),
        "files": tree_hashes(repo),
        "git_dir_entries": sorted(os.listdir(repo / ".git")),  # e.g. no sharedindex.* appears
    }
    state["head"] = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout
    return state


@pytest.fixture
def git_repo(tmp_path) -> Path:
    """A throwaway repository with one commit, a .gitignore and an untracked file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo, {"train.py": "print('train')\n", "lib/util.py": "X = 1\n", ".gitignore": "*.log\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    write(repo, {"notes.txt": "untracked\n", "run.log": "ignored\n"})
    return repo


# ---------------------------------------------------------------- user state untouched


def test_snapshot_materialize_and_patch_leave_user_state_untouched(git_repo, tmp_path):
    write(git_repo, {"lib/util.py": "X = 2\n"})
    git(git_repo, "add", "lib/util.py")  # staged ...
    write(git_repo, {"lib/util.py": "X = 3\n", "train.py": "print('edited')\n"})  # ... then changed again
    before = git_state(git_repo)

    snap = snapshot(git_repo, tmp_path / "unused")
    materialize(snap.git_dir, snap.commit, tmp_path / "out")
    commit_patched(snap.git_dir, snap.commit, {"train.py": "print('patched')\n"}, "patch")
    read_file(snap.git_dir, snap.commit, "train.py")
    list_files(snap.git_dir, snap.commit)

    assert git_state(git_repo) == before
    assert read_file(snap.git_dir, snap.commit, "lib/util.py") == "X = 3\n"  # what is on disk
    assert snap.branch == "main" and snap.head == before["head"].strip() and not snap.private
    assert Path(snap.work_tree) == git_repo.resolve() and snap.git_dir == str((git_repo / ".git").resolve())
    assert git(git_repo, "rev-parse", SNAPSHOT_REF + snap.commit).strip() == snap.commit


def test_no_hook_runs_and_user_config_is_harmless(git_repo, tmp_path):
    for key, value in [("core.autocrlf", "true"), ("core.safecrlf", "true"), ("commit.gpgSign", "true"),
                       ("gpg.program", "false"), ("i18n.commitEncoding", "ISO-8859-1"),
                       ("core.splitIndex", "true"), ("core.untrackedCache", "true")]:  # fmt: skip
        git(git_repo, "config", key, value)
    git(git_repo, "update-index", "--split-index", "--untracked-cache")
    hooks = git_repo / ".git" / "hooks"
    marker = tmp_path / "hook-ran"
    for name in ("post-index-change", "pre-commit", "post-commit", "reference-transaction", "post-checkout"):
        (hooks / name).write_text(f"#!/bin/sh\necho {name} >> '{marker}'\n")
        (hooks / name).chmod(0o755)
    before = git_state(git_repo)

    snap = snapshot(git_repo, tmp_path / "unused")
    commit_patched(snap.git_dir, snap.commit, {"train.py": "x\n"}, "patch")
    materialize(snap.git_dir, snap.commit, tmp_path / "out")

    assert not marker.exists()
    assert git_state(git_repo) == before
    raw = git(git_repo, "cat-file", "commit", snap.commit)
    assert "gpgsig" not in raw and "encoding" not in raw
    assert "author flordb <flordb@localhost> 0 +0000" in raw


# ---------------------------------------------------------------- what is in a snapshot


def test_untracked_included_ignored_and_store_excluded(git_repo, tmp_path):
    write(git_repo, {".flordb/segments/r1/0.seg": "data", "sub/.flordb/keep.txt": "nested"})
    snap = snapshot(git_repo, tmp_path / "unused")
    snapshot(git_repo, tmp_path / "unused")

    files = list_files(snap.git_dir, snap.commit)
    assert "notes.txt" in files and "train.py" in files and ".gitignore" in files
    assert "run.log" not in files
    assert not any(f.startswith(".flordb/") for f in files)
    lines = (git_repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert lines.count(".flordb/") == 1


@pytest.mark.parametrize("home", ["store", "lib/store"])
def test_a_store_kept_in_the_project_under_another_name_is_left_out(git_repo, tmp_path, home):
    """FLORDB_HOME inside the work tree: its segments are not code (each run would snapshot all earlier ones)."""
    write(git_repo, {f"{home}/segments/r1/seg-000001.parquet": "data", f"{home}/flor.duckdb": "db",
                     "src/store/model.py": "M = 1\n"})  # a package of the same name elsewhere is code
    before = git_state(git_repo)
    snap = snapshot(git_repo, tmp_path / "unused", keep_out=(git_repo / home, tmp_path / "elsewhere", git_repo))
    files = list_files(snap.git_dir, snap.commit)
    assert not any(f.startswith(f"{home}/") for f in files)
    assert "src/store/model.py" in files and "train.py" in files and "notes.txt" in files
    assert f"/{home}/" in (git_repo / ".git" / "info" / "exclude").read_text().splitlines()
    after = git_state(git_repo)  # the store now shows as ignored, as .flordb does; nothing else moved
    assert {k: after[k] for k in ("index", "head_file", "refs", "files", "head")} == \
        {k: before[k] for k in ("index", "head_file", "refs", "files", "head")}


def test_info_exclude_created_when_missing_and_anchored_line_respected(git_repo, tmp_path):
    info = git_repo / ".git" / "info"
    for p in info.iterdir():
        p.unlink()
    info.rmdir()
    snapshot(git_repo, tmp_path / "unused")
    assert (info / "exclude").read_text() == ".flordb/\n"

    (info / "exclude").write_text("# mine\n/.flordb")  # the user's own spelling, no final newline
    snapshot(git_repo, tmp_path / "unused")
    assert (info / "exclude").read_text() == "# mine\n/.flordb"


def test_tracked_files_under_store_are_excluded(git_repo, tmp_path):
    write(git_repo, {".flordb/config.toml": "x = 1\n"})
    git(git_repo, "add", "-f", ".flordb/config.toml")
    git(git_repo, "commit", "-q", "-m", "track store file")
    before = git_state(git_repo)
    snap = snapshot(git_repo, tmp_path / "unused")
    assert ".flordb/config.toml" not in list_files(snap.git_dir, snap.commit)
    assert git_state(git_repo) == before


def test_big_untracked_skipped_and_tracked_big_kept(git_repo, tmp_path):
    write(git_repo, {"weights.bin": b"\0" * 5000})
    git(git_repo, "add", "weights.bin")
    git(git_repo, "commit", "-q", "-m", "big tracked")
    # `*` in a skipped name must not act as a glob on its small neighbour
    write(git_repo, {"data dir/big *.bin": b"1" * 2000, "data dir/big x.bin": b"2" * 10, "huge.npy": b"3" * 1001})

    snap = snapshot(git_repo, tmp_path / "unused", max_untracked_bytes=1000)

    assert sorted(snap.skipped) == ["data dir/big *.bin", "huge.npy"]
    files = list_files(snap.git_dir, snap.commit)
    assert "weights.bin" in files and "data dir/big x.bin" in files
    assert "huge.npy" not in files and "data dir/big *.bin" not in files
    assert snapshot(git_repo, tmp_path / "unused", max_untracked_bytes=None).skipped == ()


# ---------------------------------------------------------------- identity of versions


def test_same_files_same_commit_across_heads_and_repos(git_repo, tmp_path):
    first = snapshot(git_repo, tmp_path / "unused")
    assert snapshot(git_repo, tmp_path / "unused").commit == first.commit

    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "commit the untracked file")
    same = snapshot(git_repo, tmp_path / "unused")
    assert same.head != first.head and same.commit == first.commit

    write(git_repo, {"train.py": "print('changed')\n"})
    changed = snapshot(git_repo, tmp_path / "unused")
    assert changed.commit != first.commit
    write(git_repo, {"train.py": "print('train')\n"})
    assert snapshot(git_repo, tmp_path / "unused").commit == first.commit

    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    write(other, {p: (git_repo / p).read_bytes() for p in ("train.py", "lib/util.py", ".gitignore", "notes.txt")})
    assert snapshot(other, tmp_path / "unused").commit == first.commit


def test_uncommitted_changes_and_deleted_tracked_files(git_repo, tmp_path):
    write(git_repo, {"train.py": "print('uncommitted')\n"})
    (git_repo / "lib" / "util.py").unlink()
    git(git_repo, "rm", "-q", "--cached", ".gitignore")  # staged deletion, file still on disk
    snap = snapshot(git_repo, tmp_path / "unused")
    files = list_files(snap.git_dir, snap.commit)
    assert read_file(snap.git_dir, snap.commit, "train.py") == "print('uncommitted')\n"
    assert "lib/util.py" not in files
    assert ".gitignore" in files


def test_detached_head(git_repo, tmp_path):
    git(git_repo, "checkout", "-q", "--detach")
    before = git_state(git_repo)
    snap = snapshot(git_repo, tmp_path / "unused")
    assert snap.branch is None and snap.head == before["head"].strip()
    assert git_state(git_repo) == before


def test_empty_repository(tmp_path):
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo, {"a.py": "a = 1\n"})
    before = git_state(repo)
    snap = snapshot(repo, tmp_path / "unused")
    assert snap.head is None and snap.branch == "main" and not snap.private
    assert list_files(snap.git_dir, snap.commit) == ["a.py"]
    assert not (repo / ".git" / "index").exists()
    assert git_state(repo) == before


def test_empty_work_tree(tmp_path):
    repo = tmp_path / "bare-bones"
    repo.mkdir()
    git(repo, "init", "-q")
    snap = snapshot(repo, tmp_path / "unused")
    assert list_files(snap.git_dir, snap.commit) == []


def test_outside_any_repository_uses_private_git_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    project = tmp_path / "project"
    write(project, {"train.py": "print(1)\n", "src/m.py": "m = 1\n", "__pycache__/m.cpython-311.pyc": "x",
                    ".flordb/segments/a": "seg"})  # fmt: skip
    private = project / ".flordb" / "git"
    assert find_git_top(project) is None
    files_before = tree_hashes(project, skip=(".flordb",))

    snap = snapshot(project, private)

    assert snap.private and snap.head is None and snap.branch is None
    assert snap.git_dir == str(private.resolve()) and snap.work_tree == str(project.resolve())
    assert not (project / ".git").exists()
    assert tree_hashes(project, skip=(".flordb",)) == files_before
    assert list_files(snap.git_dir, snap.commit) == ["src/m.py", "train.py"]
    assert (private / "info" / "exclude").read_text().splitlines().count(".flordb/") == 1
    assert snapshot(project, private).commit == snap.commit
    write(project, {"train.py": "print(2)\n"})
    changed = snapshot(project, private)
    assert changed.commit != snap.commit
    assert read_file(changed.git_dir, changed.commit, "train.py") == "print(2)\n"
    assert (private / "info" / "exclude").read_text().splitlines().count(".flordb/") == 1


def test_subdirectory_work_tree_snapshots_the_top_level(git_repo, tmp_path):
    snap = snapshot(git_repo / "lib", tmp_path / "unused")
    assert Path(snap.work_tree) == git_repo.resolve()
    assert "train.py" in list_files(snap.git_dir, snap.commit)
    assert find_git_top(git_repo / "lib") == git_repo.resolve()
    assert find_git_top(git_repo / "lib" / "util.py") == git_repo.resolve()


def test_linked_worktree(git_repo, tmp_path):
    wt = tmp_path / "wt"
    git(git_repo, "worktree", "add", "-q", "--detach", str(wt))
    write(wt, {"only_here.py": "w = 1\n"})
    before = git_state(git_repo)
    snap = snapshot(wt, tmp_path / "unused")
    assert snap.git_dir == str((git_repo / ".git").resolve()) and Path(snap.work_tree) == wt.resolve()
    assert "only_here.py" in list_files(snap.git_dir, snap.commit)
    assert git_state(git_repo) == before


def test_space_and_unicode_file_names(git_repo, tmp_path):
    names = {"my file.py": "a\n", "données/ünï código.py": "b\n", "tab\tname.txt": "c\n", '"quoted".py': "d\n"}
    write(git_repo, names)
    snap = snapshot(git_repo, tmp_path / "unused", max_untracked_bytes=1)
    assert sorted(snap.skipped) == sorted([*names, "notes.txt"])  # all untracked files are "big" here
    snap = snapshot(git_repo, tmp_path / "unused")
    files = list_files(snap.git_dir, snap.commit)
    for name, text in names.items():
        assert name in files and read_file(snap.git_dir, snap.commit, name) == text
    out = materialize(snap.git_dir, snap.commit, tmp_path / "out")
    assert (out / "données" / "ünï código.py").read_text() == "b\n"


# ---------------------------------------------------------------- reading versions back


def test_materialize_writes_exactly_the_snapshot(git_repo, tmp_path):
    write(git_repo, {"bin/run.sh": "#!/bin/sh\necho hi\n", "big.bin": b"x" * 3000})
    (git_repo / "bin" / "run.sh").chmod(0o755)
    (git_repo / "link.py").symlink_to("train.py")
    snap = snapshot(git_repo, tmp_path / "unused", max_untracked_bytes=2000)

    dest = tmp_path / "m" / "v1"
    assert materialize(snap.git_dir, snap.commit, dest) == dest
    expected = tree_hashes(git_repo, skip=(".git", "run.log", "big.bin"))
    assert tree_hashes(dest) == expected
    assert not (dest / ".git").exists()
    assert os.stat(dest / "bin" / "run.sh").st_mode & stat.S_IXUSR
    assert (dest / "link.py").is_symlink() and os.readlink(dest / "link.py") == "train.py"
    assert sorted(list_files(snap.git_dir, snap.commit)) == sorted(expected)

    with pytest.raises(VersionError, match="not an empty directory"):
        materialize(snap.git_dir, snap.commit, dest)
    empty = tmp_path / "empty"
    empty.mkdir()
    materialize(snap.git_dir, snap.commit, empty)
    assert tree_hashes(empty) == expected


def test_read_file_and_errors(git_repo, tmp_path):
    snap = snapshot(git_repo, tmp_path / "unused")
    assert read_file(snap.git_dir, snap.commit, "lib/util.py") == "X = 1\n"
    assert read_file(snap.git_dir, snap.commit, "./lib/util.py") == "X = 1\n"
    with pytest.raises(VersionError, match="'missing.py' is not a file in version"):
        read_file(snap.git_dir, snap.commit, "missing.py")
    with pytest.raises(VersionError, match="not a file"):
        read_file(snap.git_dir, snap.commit, "lib")
    with pytest.raises(VersionError, match="not a path relative"):
        read_file(snap.git_dir, snap.commit, "../etc/passwd")
    with pytest.raises(VersionError, match="no commit"):
        read_file(snap.git_dir, "0" * 40, "train.py")
    with pytest.raises(VersionError, match="no commit"):
        materialize(snap.git_dir, "0" * 40, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_commit_patched(git_repo, tmp_path):
    (git_repo / "train.py").chmod(0o755)
    snap = snapshot(git_repo, tmp_path / "unused")
    before = git_state(git_repo)
    patched_text = "print('train')\nflor.log('grad_norm', 1)\n"

    pid = commit_patched(snap.git_dir, snap.commit, {"train.py": patched_text}, "hindsight: grad_norm")

    assert git(git_repo, "rev-parse", f"{pid}^").strip() == snap.commit
    assert git(git_repo, "diff", "--name-only", snap.commit, pid).split() == ["train.py"]
    assert read_file(snap.git_dir, pid, "train.py") == patched_text
    assert git(git_repo, "ls-tree", pid, "train.py").startswith("100755 ")  # mode kept
    assert git(git_repo, "rev-parse", PATCHED_REF + pid).strip() == pid
    assert commit_patched(snap.git_dir, snap.commit, {"train.py": patched_text}, "hindsight: grad_norm") == pid
    assert commit_patched(snap.git_dir, snap.commit, {"train.py": patched_text}, "other message") != pid

    added = commit_patched(snap.git_dir, snap.commit, {"new/dir/extra.py": "e = 1\n"}, "add")
    assert git(git_repo, "diff", "--name-only", snap.commit, added).split() == ["new/dir/extra.py"]
    with pytest.raises(VersionError):
        commit_patched(snap.git_dir, snap.commit, {"lib": "not a dir\n"}, "bad")
    assert git_state(git_repo) == before


# ---------------------------------------------------------------- concurrency and speed


def _run_concurrently(n, fn):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def worker(i):
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - report any failure
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_concurrent_snapshots(git_repo, tmp_path):
    before = git_state(git_repo)
    snaps = _run_concurrently(6, lambda: snapshot(git_repo, tmp_path / "unused"))
    assert len({s.commit for s in snaps}) == 1
    assert git_state(git_repo) == before
    assert (git_repo / ".git" / "info" / "exclude").read_text().splitlines().count(".flordb/") == 1


def test_concurrent_private_snapshots_create_the_dir_once(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    project = tmp_path / "project"
    write(project, {"train.py": "print(1)\n"})
    snaps = _run_concurrently(6, lambda: snapshot(project, project / ".flordb" / "git"))
    assert len({s.commit for s in snaps}) == 1
    assert sorted(p.name for p in (project / ".flordb").iterdir()) == ["git"]
    lines = (project / ".flordb" / "git" / "info" / "exclude").read_text().splitlines()
    assert lines.count(".flordb/") == 1


def test_snapshot_is_fast(git_repo, tmp_path):
    write(git_repo, {f"pkg/mod{i}.py": f"v = {i}\n" * 50 for i in range(50)})
    snapshot(git_repo, tmp_path / "unused")
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        snapshot(git_repo, tmp_path / "unused")
        best = min(best, time.perf_counter() - t0)
    assert best < 0.5, f"snapshot took {best:.3f}s"


def test_gitpython_is_imported_only_when_a_snapshot_is_taken(git_repo, tmp_path):
    code = (
        "import sys, flordb, flordb.version, flordb.version.sandbox\n"
        "before = 'git' in sys.modules\n"
        "flordb.version.snapshot(sys.argv[1], sys.argv[2])\n"
        "print(before, 'git' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(git_repo), str(tmp_path / "unused")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]  # the recording fast path never pays for importing GitPython
