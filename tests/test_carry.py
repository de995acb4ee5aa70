"""State carried across main-loop iterations outside the checkpointed objects (issue 8).

A ``best`` value, a patience counter, a learning rate annealed by hand: plain
variables of the main loop's frame are saved (as JSON) with every checkpoint
and restored when a replay starts from one, so ``WHERE epoch = k`` executes
from the checkpoint before ``k`` rather than from iteration 0. Each replayed
value is compared with a full run of the modified script. Where the carried
state is not a plain variable, or is read before the restore point, or the run
was recorded before variables were saved, the replay starts at iteration 0 and
the plan says why.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from conftest import make_project, put, q, record
from flordb.hindsight.api import replay
from flordb.record import carry
from flordb.store.catalog import open_catalog
from flordb.store.layout import locate

# Module-level main loop; `lr`, `best`, `patience`, `hist` carried by the code after the step loop.
MODULE = '''\
import numpy as np
import flordb as flor

w = np.ones(3)
best, patience, lr, hist = float("inf"), 0, 0.5, ()
with flor.checkpointing(w=w, overhead=1e6):
    for epoch in flor.loop("epoch", range(6)):
        for step in flor.loop("step", range(3)):
            w -= lr * np.sin(w + step + epoch)
            # @step
        val = float(np.abs(w).sum())
        flor.log("val", val)
        if val < best:
            best, patience = val, 0
        else:
            patience += 1
            lr *= 0.5
        hist = hist + (round(val, 3),)
        # @post
'''
STEP = 'flor.log("g", float(w.sum()) * lr + best)'
POST = 'flor.log("mix", lr * len(hist) + best + patience)'


def in_main(text: str) -> str:
    """The same script with the main loop inside ``main()``: the carried variables are its locals."""
    head, body = text.split("w = np.ones(3)\n")
    return head + "\n\ndef main():\n" + textwrap.indent("w = np.ones(3)\n" + body, "    ") + "\n\nmain()\n"


@pytest.fixture
def projects(tmp_path):
    def make(name, recorded, now):
        project, gt = make_project(tmp_path / name), make_project(tmp_path / f"{name}-gt")
        for p, text in ((project, recorded), (gt, now)):
            record(p, text, check=True)
        (project / "train.py").write_text(now)
        return project, gt
    return make


def rows(project, sql):
    return list(q(project, sql).itertuples(index=False, name=None))


def replayed(project, names, where=None):
    rep = replay(names, yes=True, layout=locate(project), progress=False, workers=1, where=where)
    assert not rep.failed, [r.log.read_text()[-800:] for r in rep.failed]
    assert not rep.diverged and not rep.reruns, rep.fidelity
    return rep


@pytest.mark.parametrize("shape", ["module", "function"])
def test_where_epoch_starts_at_the_checkpoint_before_and_restores_carried_variables(projects, shape):
    script = MODULE if shape == "module" else in_main(MODULE)
    project, gt = projects(shape, script, put(script, step=STEP, post=POST))
    rep = replayed(project, ["g"], where="epoch = 4")
    (task,) = rep.plan.tasks
    scope = "globals" if shape == "module" else "locals"
    assert (task.start, task.stop, task.warm, task.carry_at) == (4, 5, 3, 3)
    assert set(task.carry[scope]) == {"best", "patience", "lr", "hist"}
    assert "restored from checkpoints" in rep.plan.runs[0].note
    sql = "SELECT epoch, step, g FROM logs WHERE g IS NOT NULL ORDER BY ALL"
    want = [r for r in rows(gt, sql) if r[0] == 4]
    assert rows(project, sql) == want and len(want) == 3  # bit for bit, epoch 4 only
    # An epoch-level statement, every epoch, split across two workers: the second starts mid-way.
    rep = replay(["mix"], yes=True, layout=locate(project), progress=False, workers=2)
    assert not rep.failed and not rep.diverged and not rep.reruns
    assert [t.warm for t in rep.plan.tasks] == [0, 2] and rep.plan.tasks[1].carry_at == 2
    sql = "SELECT epoch, mix FROM logs WHERE mix IS NOT NULL ORDER BY ALL"
    assert rows(project, sql) == rows(gt, sql) and len(rows(gt, sql)) == 6


FLAT = '''\
import numpy as np
import flordb as flor

w = np.ones(3)
best, lr = float("inf"), 0.5
with flor.checkpointing(w=w, overhead=1e6):
    for epoch in flor.loop("epoch", range(6)):
        w -= lr * np.sin(w + epoch)
        val = float(np.abs(w).sum())
        if val < best:
            best = val
        else:
            lr *= 0.5
        # @post
'''


def test_flat_main_loop_restores_carried_variables_with_the_end_state(projects):
    project, gt = projects("flat", FLAT, put(FLAT, post='flor.log("b", best * lr)'))
    rep = replayed(project, ["b"], where="epoch >= 4")
    (task,) = rep.plan.tasks
    assert (task.warm, task.restore_before, task.carry_at) == (4, 3, 3)
    sql = "SELECT epoch, b FROM logs WHERE b IS NOT NULL ORDER BY ALL"
    assert rows(project, sql) == [r for r in rows(gt, sql) if r[0] >= 4] and len(rows(project, sql)) == 2


ATTRIBUTE = MODULE.replace("best, patience, lr, hist = float(\"inf\"), 0, 0.5, ()",
                           "import types\nst = types.SimpleNamespace(best=float(\"inf\"))\npatience, lr, hist = 0, 0.5, ()")
ATTRIBUTE = ATTRIBUTE.replace("if val < best:\n            best, patience = val, 0",
                              "if val < st.best:\n            st.best, patience = val, 0")
EARLY = MODULE.replace("        for step in flor.loop", "        scale = 1.0 if patience < 2 else 0.5\n"
                       "        for step in flor.loop").replace("w -= lr * np", "w -= scale * lr * np")


@pytest.mark.parametrize("script, why", [
    (ATTRIBUTE, "st.best (line 17) carries state"),
    (EARLY, "code before loop 'step' reads it (line 8)"),
])
def test_carried_state_that_cannot_be_restored_starts_at_iteration_0_and_says_why(projects, script, why):
    project, gt = projects("fallback", script, put(script, step='flor.log("g", float(w.sum()) * lr)'))
    rep = replayed(project, ["g"], where="epoch = 4")
    (task,) = rep.plan.tasks
    assert task.warm == 0 and task.carry_at is None
    assert why in rep.plan.runs[0].note, rep.plan.runs[0].note
    sql = "SELECT epoch, step, g FROM logs WHERE g IS NOT NULL ORDER BY ALL"
    assert rows(project, sql) == [r for r in rows(gt, sql) if r[0] == 4]


def test_runs_recorded_before_variables_were_saved_still_replay_from_iteration_0(projects):
    project, gt = projects("old", MODULE, put(MODULE, step=STEP))
    assert rows(project, "SELECT count(val) FROM logs") == [(6,)]  # ingested
    with open_catalog(locate(project)) as cat:  # as a run recorded before checkpoints saved variables
        cat.execute("DELETE FROM checkpoints WHERE name = ?", [carry.VARS_NAME])
    rep = replayed(project, ["g"], where="epoch = 4")
    (task,) = rep.plan.tasks
    assert task.warm == 0 and task.carry_at is None
    assert "checkpoints saved no variables" in rep.plan.runs[0].note
    sql = "SELECT epoch, step, g FROM logs WHERE g IS NOT NULL ORDER BY ALL"
    assert rows(project, sql) == [r for r in rows(gt, sql) if r[0] == 4]


# -- the saved variables themselves --------------------------------------------------------


def test_snapshot_keeps_plain_values_exactly_and_leaves_the_rest_out():
    big = list(range(carry.MAX_ITEMS + 1))

    def frame_of_f():
        best, n, name, flag, none = float("inf"), 2**70, "x" * 5, True, None
        pair, nested, ratio = (1, 2.5), [[1, (2, "a")], []], 0.1 + 0.2
        arr, too_big, long_text = object(), big, "y" * (carry.MAX_CHARS + 1)
        return sys._getframe()

    frame = frame_of_f()
    saved = carry.decode(carry.encode(carry.snapshot(frame))[1])
    loc = saved["locals"]
    assert loc == {"best": float("inf"), "n": 2**70, "name": "xxxxx", "flag": True, "none": None,
                   "pair": (1, 2.5), "nested": [[1, (2, "a")], []], "ratio": 0.1 + 0.2}
    assert type(loc["flag"]) is bool and type(loc["pair"]) is tuple and type(loc["nested"][0][1]) is tuple
    assert "big" in saved["globals"] or "big" not in loc  # module globals are saved too (plain ones)
    assert "carry" not in saved["globals"]  # a module is not a plain value


def test_restore_binds_function_locals_of_a_suspended_frame():
    frames = []

    def main_loop():
        best, lr = 1.0, 0.5
        for _ in range(2):
            yield_point()
            frames.append((best, lr))

    def yield_point():
        if not frames:
            caller = sys._getframe(1)
            missing = carry.restore(caller, {"locals": {"best": 0.25, "lr": 0.125}}, {"locals": ["best", "lr", "x"]})
            assert missing == ["x"]

    main_loop()
    assert frames == [(0.25, 0.125), (0.25, 0.125)]
