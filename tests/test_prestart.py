"""The prestarted replay worker (executors/host.py): same values as ``python SCRIPT``, used when it fits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import base_env, make_project, put, record
from flordb.hindsight.executors.host import library_imports

SCRIPT = '''
import sys
preloaded = "fractions" in sys.modules  # True only when a host imported it before the script ran
import fractions, os, pickle
import numpy as np
import flordb as flor
import helper

class Box:  # defined in __main__: pickled as the script would pickle it
    def __init__(self, v):
        self.v = v

here = os.path.dirname(os.path.abspath(__file__))
facts = [__name__ == "__main__", sys.argv[1:] == ["--fast"], sys.path[0] == here, os.getcwd() == here,
         os.path.exists("data.txt")]
rng = np.random.default_rng(int(open("data.txt").read()))
w = 1.0
with flor.checkpointing(rng=rng):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(4)):
            w = w * 0.9 + helper.noise(rng)
            flor.log("w", w)
            # @step
        flor.log("box", pickle.loads(pickle.dumps(Box(w))).v)
        # @epoch
        # @pre
'''


@pytest.fixture
def proj(tmp_path):
    root = make_project(tmp_path / "proj")
    (root / "helper.py").write_text("def noise(rng):\n    return float(rng.standard_normal())\n")
    (root / "data.txt").write_text("7\n")
    (root / "train.py").write_text(SCRIPT)
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "script"], cwd=root, check=True)
    record(root, "train.py", "--fast", check=True)
    (root / "train.py").write_text(put(SCRIPT, step='flor.log("w2", w * 2)',
                                       epoch='flor.log("facts", str(facts))',
                                       pre='flor.log("pre", preloaded)'))
    return root


def query(root: Path, sql: str, prestart: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "flordb", "query", sql, "--yes", "-f", "csv"], cwd=root,
                         env=base_env(root, {"FLORDB_PRESTART": prestart}), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "reproduced exactly" in out.stderr, out.stderr
    return out.stdout.splitlines()[1:]


def test_a_prestarted_worker_replays_what_a_fresh_one_does(proj, tmp_path):
    twin = tmp_path / "twin"
    subprocess.run(["cp", "-a", str(proj), str(twin)], check=True)
    sql = "SELECT epoch, step, w2 FROM logs WHERE step IS NOT NULL ORDER BY epoch, step"
    hosted, fresh = query(proj, sql, "1"), query(twin, sql, "0")
    assert len(hosted) == 12 and hosted == fresh
    facts = "SELECT DISTINCT facts, pre FROM logs WHERE facts IS NOT NULL"
    assert query(proj, facts, "1") == ['"[True, True, True, True, True]",True']  # the host ran it
    assert query(twin, facts, "0") == ['"[True, True, True, True, True]",False']


def test_library_imports_are_the_top_level_imports_from_outside_the_project(tmp_path):
    (tmp_path / "helper.py").write_text("")
    (tmp_path / "pkg").mkdir()
    script = tmp_path / "train.py"
    script.write_text(
        "from __future__ import annotations\nimport json, os.path\nimport numpy as np\nimport helper, pkg.sub\n"
        "from . import sibling\nfrom collections import abc\nimport flordb as flor\nimport not_installed_anywhere\n"
        "try:\n    import decimal\nexcept ImportError:\n    pass\n"
        "def f():\n    import fractions\n"
        "if __name__ == '__main__':\n    import statistics\n"
    )
    assert library_imports(script, tmp_path) == ["json", "os.path", "numpy", "collections", "decimal"]
    assert library_imports(tmp_path / "missing.py", tmp_path) == []


def test_a_query_that_needs_no_replay_leaves_no_worker_behind(proj):
    """`--yes` starts a worker before the query knows what it lacks; unused, it is stopped at exit."""
    env = base_env(proj)
    out = subprocess.run([sys.executable, "-m", "flordb", "query", "SELECT count(w) AS n FROM logs", "--yes",
                          "-f", "csv"], cwd=proj, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["n", "12"], out.stderr
    hosts = subprocess.run(["pgrep", "-f", "flordb.hindsight.executors.host"], capture_output=True, text=True)
    assert hosts.stdout.strip() == ""
