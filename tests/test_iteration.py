"""flor.iteration: user-driven loops (`while True` with a counter), recorded and replayed."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_project, q, readme_block, record

from flordb.hindsight.api import replay
from flordb.store.layout import locate

# An LLM-style training script: a `while True` loop with an iteration counter,
# a micro-batch loop inside, early exit on a step budget.
WHILE = '''\
import argparse
import numpy as np
import flordb as flor


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-iters", type=int, default=6)
    args = parser.parse_args()
    lr = flor.arg("lr", 0.05)
    np.random.seed(0)
    X = np.random.randn(64, 5)
    Y = X @ np.random.randn(5) + 0.1 * np.random.randn(64)
    w = np.zeros(5)
    it = 0
    with flor.checkpointing(overhead=1e6, w=w):
        while True:
            with flor.iteration("iter", it):
                perm = np.random.permutation(64)
                for micro in flor.loop("micro", range(4)):
                    idx = perm[16 * micro:16 * (micro + 1)]
                    err = X[idx] @ w - Y[idx]
                    w -= lr * (2 * X[idx].T @ err / 16)
                    flor.log("loss", float((err ** 2).mean()))
                    # @micro
                w *= 0.99
                # @iter
            it += 1
            if it >= args.max_iters:
                break


if __name__ == "__main__":
    main()
'''
NEW = {"iter": 'flor.log("w_norm", float(np.linalg.norm(w)))',
       "micro": 'flor.log("g_abs", float(np.abs(err).sum()))'}


def with_marks(text: str, marks: dict) -> str:
    for mark, stmt in marks.items():
        lines = []
        for line in text.splitlines():
            if line.strip() == f"# @{mark}":
                line = line.replace(f"# @{mark}", stmt)
            lines.append(line)
        text = "\n".join(lines) + "\n"
    return text


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """The script recorded without the new statements, and a full run with them (the truth)."""
    root = tmp_path_factory.mktemp("iteration")
    rec, full = make_project(root / "rec"), make_project(root / "full")
    (rec / "train.py").write_text(WHILE)
    (full / "train.py").write_text(with_marks(WHILE, NEW))
    record(rec, "train.py", check=True)
    record(full, "train.py", check=True)
    (rec / "train.py").write_text(with_marks(WHILE, NEW))  # the user adds the statements now
    return rec, full


def values(project, name, where=""):
    df = q(project, f"SELECT iter, {'micro, ' if name != 'w_norm' else ''}{name} FROM logs"
                    f" WHERE {name} IS NOT NULL {where} ORDER BY ALL")
    return df


def test_recorded_coordinates_and_checkpoints(projects):
    rec, full = projects
    df = q(rec, "SELECT iter, micro, loss FROM logs ORDER BY iter, micro")
    assert len(df) == 24 and list(df.iter.unique()) == list(range(6))
    with_full = q(full, "SELECT iter, micro, loss FROM logs ORDER BY iter, micro")
    assert np.array_equal(df.loss.to_numpy(), with_full.loss.to_numpy())
    its = q(rec, "SELECT coord[1] AS i FROM loops WHERE kind = 'iter' ORDER BY 1")
    assert list(its.i) == list(range(6))
    ck = q(rec, "SELECT DISTINCT iteration FROM checkpoints ORDER BY 1")
    assert list(ck.iteration) == list(range(6))


def test_replay_new_statements_equal_a_full_run(projects):
    rec, full = projects
    layout = locate(rec)
    rep = replay(["w_norm"], yes=True, layout=layout, progress=False)
    assert not rep.failed and not rep.diverged
    assert rep.plan.runs[0].strategy == "skip"  # the micro-batch loop is restored, not re-run
    got, want = values(rec, "w_norm"), values(full, "w_norm")
    assert len(got) == 6 and np.array_equal(got.w_norm.to_numpy(), want.w_norm.to_numpy())
    rep = replay(["g_abs"], where="iter >= 3", yes=True, layout=layout, progress=False)
    assert not rep.failed and not rep.diverged
    got = values(rec, "g_abs")
    want = values(full, "g_abs", "AND iter >= 3")
    assert list(got.iter.unique()) == [3, 4, 5]  # narrowing: earlier iterations ran without logging
    assert np.array_equal(got.g_abs.to_numpy(), want.g_abs.to_numpy())


def test_nested_iteration_and_bad_counter(project):
    script = '''
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    step = 0
    while step < 3:
        with flor.iteration("step", step):
            flor.log("x", epoch * 10 + step)
        step += 1
with flor.iteration("bad", -1):
    flor.log("y", 1)
'''
    proc = record(project, script, check=True)
    assert "must be an int >= 0" in proc.stderr
    df = q(project, "SELECT epoch, step, x FROM logs WHERE x IS NOT NULL ORDER BY ALL")
    assert [tuple(r) for r in df.itertuples(index=False)] == [(e, s, e * 10 + s) for e in range(2) for s in range(3)]
    assert q(project, "SELECT y FROM logs WHERE y IS NOT NULL").y.tolist() == [1]


def test_readme_while_loop_example(project):
    record(project, readme_block("with flor.iteration(\"iter\", it):"), "--kwargs", "max_iters=4", check=True)
    df = q(project, "SELECT iter, loss FROM logs ORDER BY iter")
    assert df.iter.tolist() == [0, 1, 2, 3]
    assert df.loss.tolist() == [1.0 / (1.0 + 0.5 * (i + 1)) for i in range(4)]
    assert q(project, "SELECT min(iteration) AS i FROM checkpoints").i.iloc[0] == 0  # the first is always saved


# A flat `while True` loop whose checkpoints cost more than the budget allows: the policy
# saves iteration 0 only, and nothing tells it which iteration is the last.
FLAT = '''\
import numpy as np
import flordb as flor

np.random.seed(1)
w = np.random.randn(8)
it = 0
with flor.checkpointing(overhead=1e-9, w=w):
    while True:
        with flor.iteration("iter", it):
            w -= 0.1 * (w - np.random.randn(8))
            flor.log("w0", float(w[0]))
        it += 1
        if it >= 7:
            break
# @end
'''
END = 'flor.log("final_norm", float(np.linalg.norm(w)))'


def test_last_iteration_of_a_user_driven_loop_is_checkpointed(tmp_path):
    rec, full = make_project(tmp_path / "rec"), make_project(tmp_path / "full")
    (rec / "train.py").write_text(FLAT)
    (full / "train.py").write_text(with_marks(FLAT, {"end": END}))
    record(rec, "train.py", check=True)
    record(full, "train.py", check=True)
    ck = q(rec, "SELECT DISTINCT iteration FROM checkpoints ORDER BY 1")
    assert list(ck.iteration) == [0, 6]  # the policy's first, and the last at the loop's end
    (rec / "train.py").write_text(with_marks(FLAT, {"end": END}))
    rep = replay(["final_norm"], yes=True, layout=locate(rec), progress=False)
    assert not rep.failed and not rep.diverged
    task = rep.plan.runs[0].tasks[0]
    assert task.restore_before == 6 and task.warm == 7  # restored from the last iteration: no iteration re-runs
    got = q(rec, "SELECT final_norm FROM logs WHERE final_norm IS NOT NULL").final_norm.tolist()
    want = q(full, "SELECT final_norm FROM logs WHERE final_norm IS NOT NULL").final_norm.tolist()
    assert got == want and len(got) == 1


def test_loop_left_mid_iteration_saves_no_end_state(project):
    script = '''
import numpy as np
import flordb as flor

w = np.zeros(3)
def batches():
    yield from range(10)
with flor.checkpointing(overhead=1e-9, w=w):
    for epoch in flor.loop("epoch", batches()):
        w += 1
        if epoch == 4:
            break  # iteration 4 is half done: its state is no iteration's end
'''
    record(project, script, check=True)
    assert list(q(project, "SELECT DISTINCT iteration FROM checkpoints ORDER BY 1").iteration) == [0]
    exhausted = script.replace("        if epoch == 4:\n            break", "")
    record(project, exhausted.replace("range(10)", "range(5)"), check=True)
    ck = q(project, "SELECT run_id, list(DISTINCT iteration ORDER BY iteration) AS its FROM checkpoints"
                    " GROUP BY run_id ORDER BY run_id")
    assert [list(x) for x in ck.its] == [[0], [0, 4]]  # a generator's last iteration saved once it is exhausted
