"""Issue 11, failure 5: a replay never changes the user's files.

The script appends to a git-ignored ``outputs/history.txt`` once per epoch and
reads a git-ignored input. After one run and one hindsight replay the user's
history has one line per epoch of the run (not twice as many), the input is
unchanged, and the replayed values are right.
"""

from __future__ import annotations

import os
import textwrap

from conftest import git, git_state, record
from flordb.api import query
from flordb.store.layout import locate

SCRIPT = '''
import os
import flordb as flor

scale = float(open("data/scale.txt").read())
os.makedirs("outputs", exist_ok=True)
w = 1.0
for epoch in flor.loop("epoch", range(3)):
    w = w * scale
    with open("outputs/history.txt", "a") as f:
        f.write(f"epoch {epoch} w {w}\\n")
    with open("data/scale.txt", "a") as f:  # a script that writes its own input, too
        f.write("")
    flor.log("w", w)EXTRA
'''


def test_replay_leaves_ignored_outputs_and_inputs_alone(project):
    (project / ".gitignore").write_text("outputs/\ndata/\n")
    (project / "data").mkdir()
    (project / "data" / "scale.txt").write_text("2\n")
    git(project, "add", ".gitignore")
    git(project, "commit", "-q", "-m", "ignore outputs")
    (project / "train.py").write_text(SCRIPT.replace("EXTRA", ""))
    proc = record(project, "train.py")
    assert proc.returncode == 0, proc.stderr
    history = (project / "outputs" / "history.txt").read_text()
    assert history.count("\n") == 3

    (project / "train.py").write_text(SCRIPT.replace("EXTRA", "\n    flor.log(\"w10\", w * 10)"))
    before = git_state(project)
    cwd = os.getcwd()
    os.chdir(project)
    try:
        df = query("SELECT epoch, w, w10 FROM logs ORDER BY epoch", replay="yes", layout=locate(project))
    finally:
        os.chdir(cwd)
    assert df["w10"].tolist() == [20.0, 40.0, 80.0] and df["w"].tolist() == [2.0, 4.0, 8.0]
    assert (project / "outputs" / "history.txt").read_text() == history  # not appended to by the replay
    assert (project / "data" / "scale.txt").read_text() == "2\n"
    assert git_state(project) == before
    trees = list((locate(project).replays / "trees").glob("*/outputs/history.txt"))
    assert trees and all(t.read_text().count("\n") == 6 for t in trees)  # its copy: 3 lines + its own 3
