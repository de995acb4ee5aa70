"""The README's safety examples run as written (issue 11)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, base_env, record

README = (REPO_ROOT / "README.md").read_text()
FLORDB = str(Path(sys.executable).with_name("flordb"))


def _commands(block_marker: str) -> list[str]:
    lines = [ln for ln in README.splitlines() if block_marker in ln]
    assert lines, f"README lost its {block_marker!r} example"
    return lines


def _run(project, line: str) -> subprocess.CompletedProcess:
    line = line.strip().lstrip("$ ").split("  #")[0]
    argv = shlex.split(line)
    assert argv[0] == "flordb"
    return subprocess.run([FLORDB, *argv[1:]], cwd=project, env=base_env(project), capture_output=True, text=True)


def test_readme_doctor_and_allow_files_examples_run(project):
    record(project, """
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    flor.log("loss", 1.0 / (epoch + 1))
""", check=True)
    (project / "labels.csv").write_text("epoch,label\n0,cold\n1,warm\n")
    for line in _commands("flordb doctor"):
        if line.strip().startswith(("flordb", "$ flordb")):
            proc = _run(project, line)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "ok: catalog opens" in proc.stdout
    (line,) = [ln for ln in _commands("--allow-files labels.csv") if ln.startswith("$ flordb")]
    proc = _run(project, line)
    assert proc.returncode == 0, proc.stderr
    assert "cold" in proc.stdout and "warm" in proc.stdout
    proc = _run(project, line.replace(" --allow-files labels.csv", ""))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--allow-files" in proc.stderr
