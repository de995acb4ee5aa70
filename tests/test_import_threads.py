"""No FlorDB thread imports a module (issue 11, the start-up race).

A warm-up thread importing pyarrow (hence numpy) while the script imported
numpy made ``flor.checkpointing(state={...})`` fail with "partially
initialized module 'numpy' has no attribute 'ndarray'" in 4 of 5 runs, and the
first checkpoint was lost. Two threads importing the same packages can always
do that, so FlorDB's threads (checkpoint writer, heartbeat, the shell's
completion refresh, the UI's replay jobs) import nothing: what they need is
imported before they start, on the thread that starts them. An import hook
records every import made off the main thread.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import base_env, make_project, record

SPY = """
import json, os, sys, threading
_seen = []
class _Spy:
    def find_spec(self, name, path=None, target=None):
        t = threading.current_thread()
        if t is not threading.main_thread() and t.name.startswith("flordb"):
            _seen.append([t.name, name])
        return None
sys.meta_path.insert(0, _Spy())
import atexit
atexit.register(lambda: open(os.environ["SPY_OUT"], "w").write(json.dumps(_seen)))
"""

# The shape of the failing report: a script that never imports numpy checkpoints a plain dict.
RACE = SPY + """
import random
import flordb as flor
state = {"w": [1.0, 2.0], "seen": 0}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(2)):
            flor.log("loss", random.random())
        state["seen"] += 1
"""

TORCH = SPY + """
import numpy as np
import torch
import flordb as flor
net = torch.nn.Linear(3, 2)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
arr = np.zeros(4)
with flor.checkpointing(net=net, opt=opt, arr=arr):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(2)):
            loss = net(torch.ones(1, 3)).sum()
            opt.zero_grad(); loss.backward(); opt.step()
            flor.log("loss", loss.item())
        arr += 1
"""


def _checkpointed_iterations(root) -> list[int]:
    from conftest import q

    df = q(root, "SELECT DISTINCT iteration FROM checkpoints ORDER BY 1")
    return [int(v) for v in df["iteration"]]


@pytest.mark.parametrize("attempt", range(3))
def test_the_start_up_race_cannot_happen(tmp_path, attempt):
    root = make_project(tmp_path / "proj")
    out = tmp_path / "spy.json"
    proc = record(root, RACE, env={"SPY_OUT": str(out)})
    assert proc.returncode == 0, proc.stderr
    assert "partially initialized" not in proc.stderr and "checkpoint of" not in proc.stderr, proc.stderr
    assert json.loads(out.read_text()) == []  # no FlorDB thread imported anything
    assert _checkpointed_iterations(root)[:1] == [0]  # the first checkpoint is there


def test_torch_and_numpy_checkpoints_import_nothing_in_the_background(tmp_path):
    pytest.importorskip("torch")
    root = make_project(tmp_path / "proj")
    out = tmp_path / "spy.json"
    proc = record(root, TORCH, env={"SPY_OUT": str(out)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == []  # torch.save's lazy imports happened on the training thread
    assert _checkpointed_iterations(root)[:1] == [0]


def test_the_shell_refresh_thread_imports_nothing(tmp_path):
    root = make_project(tmp_path / "proj")
    record(root, "import flordb as flor\nfor e in flor.loop('epoch', range(2)):\n    flor.log('x', e)\n", check=True)
    out = tmp_path / "spy.json"
    code = SPY + """
from flordb.cli.shell import Shell
shell = Shell(fmt="csv", interactive=False)
shell.refresh()
shell._refresh_thread.join(60)
assert "x" in shell.completer.vocab.tables["logs"], shell.completer.vocab
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=base_env(root, {"SPY_OUT": str(out)}),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == []
