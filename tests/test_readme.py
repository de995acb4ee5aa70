"""Every Python and shell block of README.md runs as written, in order, in one project.

Shell blocks run with bash in the project (the venv's ``flordb`` and ``python``
first on PATH); in a block of ``$ command`` lines followed by sample output,
the commands run, and lines after a ``flordb>``/``...>`` prompt are the
command's input. Python blocks run in this one process, sharing one namespace,
the way a notebook would. A comment right before a block may say how to treat
it: ``<!-- readme-test: not run (reason) -->``, ``... insert into FILE after: LINE``
(a statement the reader adds to a script), ``... each command may exit 1 ...``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO_ROOT, base_env, make_project

README = REPO_ROOT / "README.md"
_BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>.*?) -->\n[ \t]*)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
RUNNABLE = {"python", "bash", "sh", "shell", ""}


def blocks() -> list[dict]:
    out = []
    for m in _BLOCK.finditer(README.read_text()):
        line = README.read_text()[: m.start("body")].count("\n") + 1
        out.append({"lang": m.group("lang"), "body": m.group("body"), "mark": m.group("mark") or "", "line": line})
    return out


def test_every_block_is_runnable_or_marked():
    for b in blocks():
        if b["lang"] not in RUNNABLE:
            continue
        if b["lang"] == "" and not b["body"].lstrip().startswith("$ ") and "not run" not in b["mark"]:
            pytest.fail(f"README.md line {b['line']}: a plain block that is neither commands nor marked not run")


def commands_of(body: str) -> list[tuple[str, str]]:
    """(command, stdin) pairs of a ``$ command`` block; output lines are skipped."""
    out: list[tuple[str, str]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], ""))
        elif re.match(r"^(flordb>|\s*\.\.\.>)\s?", line) and out:
            cmd, given = out[-1]
            out[-1] = (cmd, given + re.sub(r"^(flordb>|\s*\.\.\.>)\s?", "", line) + "\n")
    return out


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = make_project(tmp_path / "proj")
    shutil.copytree(REPO_ROOT / "examples" / "mlp", root / "examples" / "mlp")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "examples"], cwd=root, check=True, capture_output=True)
    monkeypatch.chdir(root)
    env = base_env(root)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PAGER"] = "cat"
    monkeypatch.setenv("FLORDB_PROGRESS", "0")
    monkeypatch.delenv("FLORDB_HOME", raising=False)
    return root, env


def run_shell_block(root: Path, env: dict, b: dict) -> None:
    body = b["body"]
    steps = commands_of(body) if b["lang"] == "" else [(body, "")]
    for cmd, given in steps:
        p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", cmd], cwd=root, env=env, input=given,
                           capture_output=True, text=True, timeout=600)
        ok = {0, 1} if "may exit 1" in b["mark"] else {0}
        if "may exit 1" in b["mark"] and b["lang"] != "":
            # each line on its own, so that one exit 1 does not hide the rest
            for line in [l for l in body.splitlines() if l.strip() and not l.lstrip().startswith("#")]:
                q = subprocess.run(["bash", "-c", line], cwd=root, env=env, capture_output=True, text=True,
                                   timeout=600)
                assert q.returncode in ok and "Traceback" not in q.stderr, \
                    f"README.md line {b['line']}: {line}\n{q.stdout}\n{q.stderr}"
            return
        assert p.returncode in ok and "Traceback" not in p.stderr, \
            f"README.md line {b['line']}: {cmd}\nexit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"


def insert(root: Path, b: dict) -> None:
    m = re.match(r"insert into (\S+) after: (.*)$", b["mark"])
    path = root / m.group(1)
    source = path.read_text()
    anchor = next(line for line in source.splitlines() if line.strip() == m.group(2).strip())
    path.write_text(source.replace(anchor + "\n", anchor + "\n" + b["body"], 1))


def test_readme_runs_as_written(project):
    root, env = project
    namespace: dict = {}
    ran = 0
    for b in blocks():
        if b["lang"] not in RUNNABLE or "not run" in b["mark"]:
            continue
        if b["mark"].startswith("insert into"):
            insert(root, b)
        elif b["lang"] == "python":
            code = textwrap.dedent(b["body"])
            try:
                exec(compile(code, f"README.md:{b['line']}", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - the message says which block
                pytest.fail(f"README.md line {b['line']}: {type(exc).__name__}: {exc}")
        else:
            run_shell_block(root, env, b)
        ran += 1
    assert ran >= 15
    assert (root / "runs.duckdb").exists() and (root / "loss.png").exists()
