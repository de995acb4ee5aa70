"""Shared test fixtures and helpers (kept generic: other test modules build on them).

- ``project``: a fresh git repository in a temporary directory, with a local
  identity, one commit, and no global configuration leaking in.
- ``record(project, script, *args, env=None)``: run a script (text or path)
  with the venv's Python inside the project, progress bar off.
- ``q(project, sql)``: ``flordb.api.query`` on the project's store, no replay.
- ``git_state(path)``: everything about the user's git state a run must not change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def git(cwd, *args, check=True) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=_git_env())
    if check and out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


def _git_env() -> dict:
    env = dict(os.environ)
    env.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not refresh (rewrite) the index we hash
    return env


def base_env(project: Path | None = None, extra: dict | None = None) -> dict:
    """Environment for a child process: progress bar off, flordb importable, no stray FLORDB_HOME."""
    env = dict(os.environ)
    env.pop("FLORDB_HOME", None)
    env.pop("FLORDB_DISABLE", None)
    env["FLORDB_PROGRESS"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    if extra:
        env.update(extra)
    return env


def make_project(root: Path) -> Path:
    """Initialise ``root`` as a git repository with a local identity and one commit."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Flor Test")
    git(root, "config", "user.email", "flor@example.com")
    git(root, "config", "commit.gpgsign", "false")
    (root / "README.md").write_text("test project\n")
    git(root, "add", "README.md")
    git(root, "commit", "-q", "-m", "initial")
    return root


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A temporary git repository with a local identity and one commit; returns its path."""
    monkeypatch.delenv("FLORDB_HOME", raising=False)
    monkeypatch.delenv("FLORDB_DISABLE", raising=False)
    return make_project(tmp_path / "proj")


def write_script(project: Path, text: str, name: str = "train.py") -> Path:
    path = Path(project) / name
    path.write_text(textwrap.dedent(text))
    return path


def _script_path(project: Path, script) -> Path:
    """A path (absolute, or relative to the project) stays a path; anything else is source text."""
    if isinstance(script, Path):
        return script if script.is_absolute() else project / script
    if "\n" not in script and script.endswith(".py"):
        for candidate in (project / script, Path(script)):
            if candidate.exists():
                return candidate
    return write_script(project, script)


def record(project, script, *args, env=None, timeout=120, check=False) -> subprocess.CompletedProcess:
    """Run ``script`` (source text, or a path) as ``python script args...`` in ``project``."""
    path = _script_path(Path(project), script)
    proc = subprocess.run(
        [sys.executable, str(path), *map(str, args)], cwd=project, env=base_env(project, env),
        capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def spawn(project, script, *args, env=None, **kwargs) -> subprocess.Popen:
    """Start ``script`` in the background (same environment as :func:`record`)."""
    path = _script_path(Path(project), script)
    return subprocess.Popen(
        [sys.executable, str(path), *map(str, args)], cwd=project, env=base_env(project, env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def put(text: str, **marks: str) -> str:
    """``text`` with each ``# @mark`` line replaced by its statement, at that line's indentation."""
    for mark, line in marks.items():
        indent = next(l[: len(l) - len(l.lstrip())] for l in text.splitlines() if l.strip() == f"# @{mark}")
        text = text.replace(f"{indent}# @{mark}", indent + line)
    return text


# A run that stops after epoch 0 until a file named `go` appears: a live run for pages that grow.
LIVE = """
import os, time
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    while epoch == 1 and not os.path.exists("go"):  # epoch 0 is on disk once epoch 1 starts
        time.sleep(0.05)
    for step in flor.loop("step", range(10)):
        flor.log("loss", 1.0 / (1 + step))
"""


def q(project, sql):
    """``flordb.api.query(sql)`` on the project's store, never replaying."""
    from flordb.api import query
    from flordb.store.layout import locate

    return query(sql, replay="no", layout=locate(project))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_state(path) -> dict:
    """Branch, HEAD, porcelain status, index hash and the hash of every working file."""
    path = Path(path)
    files = {}
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) == path and d in (".git", ".flordb"))]
        for f in filenames:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                files[str(p.relative_to(path))] = _sha(p)
    index = path / ".git" / "index"
    index_hash = _sha(index) if index.exists() else None
    return {
        "branch": git(path, "symbolic-ref", "-q", "--short", "HEAD", check=False),
        "head": git(path, "rev-parse", "-q", "--verify", "HEAD", check=False),
        "status": git(path, "status", "--porcelain", "--untracked-files=all"),
        "index": index_hash,
        "files": files,
    }


def readme_block(contains: str, lang: str = "python") -> str:
    """The README code block (```lang) that contains ``contains``: README examples run as written."""
    import re

    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)
    found = [b for b in blocks if contains in b]
    assert len(found) == 1, f"{len(found)} README {lang} blocks contain {contains!r}"
    return found[0]
