"""A new flor.log statement in a helper module of the project (issue 8).

``train.py`` imports ``Model`` from ``model.py``; the statement is added to
``Model.step`` (called in the step loop), in a version of ``model.py`` that did
not import flordb. The replay patches ``model.py`` in the historical version
too, runs ``train.py``, and every value equals a full run of the modified code.
"""

from __future__ import annotations

import pytest

from conftest import make_project, q, record
from flordb.hindsight.api import replay
from flordb.hindsight.helpers import imported_files, with_flor_import
from flordb.store.layout import locate

MODEL = '''\
"""A tiny model."""
import numpy as np


class Model:
    def __init__(self):
        self.w = np.ones(3)

    def step(self, x):
        g = np.sin(self.w + x)
        # @helper
        self.w -= 0.1 * g
        return float((self.w ** 2).sum())
'''
TRAIN = '''\
import flordb as flor
from model import Model

m = Model()
with flor.checkpointing(w=m.w):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(2)):
            flor.log("loss", m.step(step + epoch))
'''
NOW = MODEL.replace('import numpy as np\n', 'import numpy as np\n\nimport flordb as flor\n').replace(
    "# @helper", 'flor.log("g", float(g.sum()))')


def test_a_statement_in_an_imported_module_replays_against_a_full_run(tmp_path):
    project, gt = make_project(tmp_path / "p"), make_project(tmp_path / "gt")
    for p, model in ((project, MODEL), (gt, NOW)):
        (p / "model.py").write_text(model)
        record(p, TRAIN, check=True)
    (project / "model.py").write_text(NOW)
    rep = replay(["g"], yes=True, layout=locate(project), progress=False, workers=1)
    assert not rep.failed, [r.log.read_text()[-800:] for r in rep.failed]
    assert not rep.diverged and not rep.plan.refused, rep.plan.refused
    (run,) = rep.plan.runs
    assert run.strategy == "reexec" and rep.plan.tasks[0].script == "train.py"
    assert rep.plan.statements[0].position == "in model.py, which train.py imports"
    assert "its place is not analysed" in run.note
    sql = "SELECT epoch, step, g FROM logs WHERE g IS NOT NULL ORDER BY ALL"
    got, want = list(q(project, sql).itertuples(index=False)), list(q(gt, sql).itertuples(index=False))
    assert got == want and len(want) == 6  # bit for bit
    assert (project / "model.py").read_text() == NOW  # the user's file is untouched


REPORTS = '''\
"""Reports, called before and after the training loop."""
import flordb as flor


def summary(m):
    n = float(len(m.w))
    # @before
    return n


def report(m):
    final = float(m.w.sum())
    # @after
    return final
'''
TRAIN_REPORTS = TRAIN.replace("from model import Model\n", "from model import Model\nfrom reports import report, summary\n") \
    .replace("m = Model()\n", "m = Model()\nsummary(m)\n") + "report(m)\n"


def test_helper_statements_before_and_after_the_main_loop_are_logged(tmp_path):
    """The place of a helper's statement is not analysed: the replay logs it in the prefix and the suffix too."""
    now = REPORTS.replace("# @before", 'flor.log("n_params", n)').replace("# @after", 'flor.log("final", final)')
    project, gt = make_project(tmp_path / "p"), make_project(tmp_path / "gt")
    for p, reports in ((project, REPORTS), (gt, now)):
        (p / "model.py").write_text(MODEL)
        (p / "reports.py").write_text(reports)
        record(p, TRAIN_REPORTS, check=True)
    (project / "reports.py").write_text(now)
    rep = replay(["n_params", "final"], yes=True, layout=locate(project), progress=False, workers=1)
    assert not rep.failed, [r.log.read_text()[-800:] for r in rep.failed]
    assert not rep.diverged and not rep.plan.refused, rep.plan.refused
    sql = "SELECT n_params, final FROM logs WHERE n_params IS NOT NULL OR final IS NOT NULL ORDER BY ALL"
    got, want = list(q(project, sql).itertuples(index=False)), list(q(gt, sql).itertuples(index=False))
    assert [tuple(map(str, r)) for r in got] == [tuple(map(str, r)) for r in want] and len(want) == 1  # one row: both outside any loop


def test_imports_are_followed_through_project_modules(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "nets.py").write_text("from .layers import Dense\n")
    (tmp_path / "pkg" / "layers.py").write_text("import numpy\n")
    (tmp_path / "train.py").write_text("import os\nfrom pkg.nets import Net\n")
    (tmp_path / "other.py").write_text("")
    assert imported_files(tmp_path, "train.py") == {"pkg/__init__.py", "pkg/nets.py", "pkg/layers.py"}


@pytest.mark.parametrize("old, want_line", [
    ('"""Doc."""\nfrom __future__ import annotations\nimport numpy\n', 3),
    ("import numpy\n", 1),
])
def test_the_flordb_import_is_added_to_an_old_helper_that_lacks_it(old, want_line):
    current = "import numpy\nimport flordb as flor\n"
    patched = with_flor_import(old, current)
    assert patched.splitlines()[want_line - 1] == "import flordb as flor"
    assert patched.replace("import flordb as flor\n", "") == old
    assert with_flor_import(patched, current) == patched  # already there: unchanged
