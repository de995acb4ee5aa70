"""Issue 8 on small numpy scripts: the runtime guard, predicates on the column being
filled, and the issue's own 20-line script through the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import base_env, make_project, put, q, record
from flordb.hindsight.api import replay
from flordb.api import query
from flordb.store.catalog import open_catalog
from flordb.store.layout import locate

# `add` comes from another module: the analysis cannot see that it changes `hist`, so it
# deems skipping safe; the value the run recorded (n) then diverges, and the guard re-runs.
HELPERS = "def add(acc, value):\n    acc.append(value)\n"
GUARDED = '''\
import numpy as np
import flordb as flor
from helpers import add

w = np.zeros(2)
hist = []
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(4)):
        for s in flor.loop("step", range(3)):
            w += 0.5
            add(hist, float(w.sum()))
        flor.log("n", len(hist))
        # @post
'''
POST = 'flor.log("w_now", float(w.sum()) * len(hist))'

# The issue's example: the step loop lives in train(), which returns a running total.
ISSUE = '''\
import numpy as np
import flordb as flor

state = np.zeros(3)


def train(epoch):
    total = 0.0
    for step in flor.loop("step", range(5)):
        g = np.sin(state + step)
        # @step
        state[:] = state - 0.1 * g
        total += float(g.sum())
        flor.log("loss", float((state ** 2).sum()))
    return total


with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(4)):
        t = train(epoch)
        flor.log("total", t)
        # @post
'''


@pytest.fixture
def projects(tmp_path):
    def make(name, recorded, now, extra=None):
        project, gt = make_project(tmp_path / name), make_project(tmp_path / f"{name}-gt")
        for p, text in ((project, recorded), (gt, now)):
            for fname, body in (extra or {}).items():
                (p / fname).write_text(body)
            (p / "train.py").write_text(text)
            record(p, "train.py", check=True)
        (project / "train.py").write_text(now)
        return project, gt
    return make


def rows(project, sql):
    return list(q(project, sql).itertuples(index=False, name=None))


def test_divergence_after_skipping_reruns_with_reexecution_and_keeps_both_attempts(projects):
    project, gt = projects("guard", GUARDED, put(GUARDED, post=POST), {"helpers.py": HELPERS})
    rep = replay(["w_now"], yes=True, layout=locate(project), progress=False, workers=1)
    assert [r.strategy for r in rep.plan.runs] == ["skip"]  # the analysis could not see add()
    assert len(rep.reruns) == 1 and not rep.diverged and not rep.failed
    sql = "SELECT epoch, w_now FROM logs WHERE w_now IS NOT NULL ORDER BY ALL"
    assert rows(project, sql) == rows(gt, sql) and len(rows(gt, sql)) == 4
    with open_catalog(locate(project)) as cat:
        attempts = cat.execute("SELECT replay_id, strategy, status FROM replays ORDER BY started").fetchall()
    first, second = rep.reruns[0]
    assert {(a[0], a[2]) for a in attempts} >= {(first, "diverged"), (second, "ok")}
    assert dict((a[0], a[1]) for a in attempts)[second] == "reexec"


def test_issue_script_step_level_via_cli_and_predicates_on_the_column(projects):
    now = put(ISSUE, step='flor.log("g", float(g.sum()))', post='flor.log("w_norm", float(np.abs(state).sum()) * 10)')
    project, gt = projects("issue", ISSUE, now)
    cli = [sys.executable, "-m", "flordb", "query"]
    out = subprocess.run([*cli, "SELECT epoch, step, g FROM logs WHERE g IS NOT NULL ORDER BY ALL", "--yes"],
                         cwd=project, env=base_env(project), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "inside loop 'step', via train()" in out.stderr
    sql = "SELECT epoch, step, g FROM logs WHERE g IS NOT NULL ORDER BY ALL"
    assert rows(project, sql) == rows(gt, sql) and len(rows(gt, sql)) == 20
    # An epoch-level statement after train(): train() returns what its loop sums, so the
    # nested loop is re-executed, and the plan says why; WHERE on the column itself is fine.
    df = query("SELECT epoch, w_norm FROM logs WHERE w_norm > 5 ORDER BY ALL", replay="yes", layout=locate(project))
    want = rows(gt, "SELECT epoch, w_norm FROM logs WHERE w_norm > 5 ORDER BY ALL")
    assert list(df.itertuples(index=False, name=None)) == want and want
    with open_catalog(locate(project)) as cat:
        (strategy,) = cat.execute("SELECT strategy FROM replays WHERE list_contains(names, 'w_norm')").fetchone()
    assert strategy == "reexec"
    assert rows(project, "SELECT count(w_norm) FROM logs") == [(4,)]  # WHERE did not narrow the replay


def test_pushdown_drops_predicates_on_columns_being_filled():
    from flordb.hindsight.plan import pushdown
    from flordb.sql.schema import LogsSchema

    schema = LogsSchema()
    assert pushdown("g IS NOT NULL", schema, "epoch", ["g"]) is None
    assert pushdown("w_norm > 5 OR w_norm IS NULL", schema, "epoch", ["w_norm"]) is None


FLAKY = '''\
import os
import numpy as np
import flordb as flor

lr = flor.arg("lr", 0.1)
w = np.zeros(2)
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(3)):
        for s in flor.loop("step", range(2)):
            w += lr
        flor.log("w", float(w.sum()))
        # @post
'''


def test_failed_replays_give_a_loud_partial_answer_and_are_retried(tmp_path):
    from flordb.hindsight.partial import PartialAnswerError, PartialAnswerWarning

    flag = tmp_path / "fail-now"
    flag.write_text("")
    project = make_project(tmp_path / "flaky")
    (project / "train.py").write_text(FLAKY)
    for lr in ("0.1", "0.2"):
        record(project, "train.py", "--kwargs", f"lr={lr}", check=True)
    post = f'flor.log("w2", float(w.sum()) / (0 if lr > 0.15 and os.path.exists({str(flag)!r}) else 1))'
    (project / "train.py").write_text(put(FLAKY, post=post))
    cli = [sys.executable, "-m", "flordb", "query", "SELECT count(w2) AS n FROM logs", "--yes", "-f", "csv"]

    def run_cli():
        return subprocess.run(cli, cwd=project, env=base_env(project), capture_output=True, text=True, timeout=300)

    out = run_cli()  # one of two runs fails: answered, but said, and exit 1
    assert out.returncode == 1, out.stderr
    assert out.stdout.split() == ["n", "3"]
    assert "partial answer: w2 is missing from 1 run whose replay failed" in out.stderr
    assert "ZeroDivisionError" in out.stderr and "flordb replay w2" in out.stderr
    layout = locate(project)
    with pytest.warns(PartialAnswerWarning, match="missing from 1 run"):
        assert query("SELECT count(w2) AS n FROM logs", replay="yes", layout=layout)["n"][0] == 3
    with pytest.raises(PartialAnswerError):
        query("SELECT count(w2) AS n FROM logs", replay="strict", layout=layout)
    flag.unlink()  # the cause goes away: the next query retries, showing the earlier failure
    out = run_cli()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n", "6"]
    assert "Retrying: w2 is missing from 1 run whose replay failed" in out.stderr


MULTI_TRAIN = '''\
import numpy as np
import flordb as flor

lr = flor.arg("lr", 0.1)
w = np.ones(3)
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(3)):
        for s in flor.loop("step", range(2)):
            w -= lr * w
        lr = lr * 0.9
        # @post
'''
MULTI_FINETUNE = '''\
import numpy as np
import flordb as flor


def tune(w, rate):
    for s in flor.loop("step", range(3)):
        w += rate


w = np.zeros(2)
rate = 0.5
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(2)):
        tune(w, rate)
        rate = rate / 2
        # @post
'''


def test_two_scripts_logging_the_same_name_each_get_their_own_statement(tmp_path):
    stmts = {"train.py": 'flor.log("lr_now", lr * float(w.sum()))', "finetune.py": 'flor.log("lr_now", rate)'}
    texts = {"train.py": MULTI_TRAIN, "finetune.py": MULTI_FINETUNE}
    project, gt = make_project(tmp_path / "multi"), make_project(tmp_path / "multi-gt")
    for name, text in texts.items():
        (project / name).write_text(text)
        (gt / name).write_text(put(text, post=stmts[name]))
        record(project, name, check=True)
        record(gt, name, check=True)
    for name, text in texts.items():
        (project / name).write_text(put(text, post=stmts[name]))
    layout = locate(project)
    sql = "SELECT script, epoch, lr_now FROM logs WHERE script = 'finetune.py' ORDER BY ALL"
    got = list(query(sql, replay="yes", layout=layout).itertuples(index=False, name=None))
    assert got == rows(gt, sql) and len(got) == 2
    assert rows(project, "SELECT count(lr_now) FROM logs WHERE script = 'train.py'") == [(0,)]  # narrowed
    sql = "SELECT script, epoch, lr_now FROM logs ORDER BY ALL"
    got = list(query(sql, replay="yes", layout=layout).itertuples(index=False, name=None))
    assert got == rows(gt, sql) and len(got) == 5
