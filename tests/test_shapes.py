"""Hindsight on training scripts shaped as people write them (issue 8).

Four scripts under ``fixtures/shapes`` (small torch models, synthetic data):
(a) ``train(epoch)``/``evaluate()`` functions, (b) a ``Trainer`` class, (c)
``main() -> main_worker(args) -> train(...)`` with argparse, (d) a batch
generator and an early ``break``. Each is recorded without hindsight
statements; the current code adds one inside the step loop, one at epoch level
after the call, one before the main loop and one after it. Every replayed
value must equal, bit for bit, a full run of the modified script, and the
plan's strategy is asserted (skip where safe, re-execution with a reason where not).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from conftest import make_project, q  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "replay"))
from replay_scripts import run_parallel, with_statements  # noqa: E402

from flordb.hindsight.api import replay  # noqa: E402
from flordb.api import query  # noqa: E402
from flordb.store.layout import locate  # noqa: E402

SHAPES = Path(__file__).parent / "fixtures" / "shapes"

STATEMENTS = {  # script: {marker: statement}
    "shape_a.py": dict(
        step='flor.log("a_grad", float(model.fc1.weight.grad.norm()))',
        post=['flor.log("a_wnorm", float(model.fc2.weight.norm()))',
              'flor.log("a_lr", optimizer.param_groups[0]["lr"])'],
        pre='flor.log("a_init", float(model.fc1.weight.sum()))',
        suffix='flor.log("a_best", best_val)',
    ),
    "shape_b.py": dict(
        step='flor.log("b_gstep", self.global_step)',
        post='flor.log("b_hist", sum(self.history))',
        pre='flor.log("b_params", sum(p.numel() for p in trainer.model.parameters()))',
        suffix='flor.log("b_best", self.best)',
    ),
    "shape_c.py": dict(
        step='flor.log("c_loss", loss.item())',
        post='flor.log("c_lr", scheduler.get_last_lr()[0])',
        pre='flor.log("c_init", float(model[0].weight.sum()))',
        suffix='flor.log("c_final", test(test_loader, model))',
    ),
    "shape_d.py": dict(
        step='flor.log("d_yhat", float(net(x).mean()))',
        post='flor.log("d_wnorm", float(net[0].weight.norm()))',
        pre='flor.log("d_xmean", float(X.mean()))',
        suffix='flor.log("d_final", float(net[2].bias))',
    ),
}
ARGS = {
    "shape_a.py": ["--kwargs", "epochs=4"],
    "shape_b.py": [],
    "shape_c.py": ["--epochs", "3", "--lr", "0.05"],
    "shape_d.py": ["--epochs", "3", "--dry-run"],
}


def current(script: str) -> str:
    return with_statements((SHAPES / script).read_text(), **STATEMENTS[script])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    project, gt = make_project(root / "proj"), make_project(root / "gt")
    for script in STATEMENTS:
        (project / script).write_text((SHAPES / script).read_text())
        (gt / script).write_text(current(script))
    jobs = [(p, p / s, ARGS[s], None) for s in STATEMENTS for p in (project, gt)]
    run_parallel(jobs)
    best = (project / "best.pt").read_bytes()  # written by shape (a) when validation improves
    for script in STATEMENTS:  # the user adds the statements to the current code
        (project / script).write_text(current(script))
    return SimpleNamespace(project=project, gt=gt, layout=locate(project), best=best)


def values(project, name, loops):
    cols = ", ".join([*loops, f'"{name}"'])
    df = q(project, f'SELECT {cols} FROM logs WHERE "{name}" IS NOT NULL ORDER BY ALL')
    return list(df.itertuples(index=False, name=None))


def check(ns, names, loops, strategy, expect_rows=None):
    rep = replay(names, yes=True, layout=ns.layout, progress=False, workers=1)
    assert not rep.failed, [r.log.read_text()[-800:] for r in rep.failed]
    assert not rep.diverged, rep.fidelity
    assert [r.strategy for r in rep.plan.runs] == [strategy], [(r.strategy, r.note) for r in rep.plan.runs]
    for name in names:
        got, want = values(ns.project, name, loops), values(ns.gt, name, loops)
        assert want, f"ground truth has no {name}"
        assert got == want  # bit for bit
        if expect_rows is not None:
            assert len(got) == expect_rows
    return rep


def test_a_step_level_through_a_query_with_where_on_the_column_itself(shapes):
    """The issue's first failure: a step-level statement inside train() replays from a query,
    and WHERE on the hindsight column neither fails pushdown nor narrows the replay."""
    df = query('SELECT epoch, step, a_grad FROM logs WHERE a_grad IS NOT NULL AND a_grad > -1 ORDER BY ALL',
               replay="yes", layout=shapes.layout)
    got = list(df.itertuples(index=False, name=None))
    assert got == values(shapes.gt, "a_grad", ("epoch", "step"))
    assert len(got) == 4 * 6


def test_a_epoch_level_after_train_skips_the_nested_loop(shapes):
    rep = check(shapes, ["a_wnorm", "a_lr"], ("epoch",), "skip", expect_rows=4)
    (run,) = rep.plan.runs
    assert "after loop 'step'" in rep.plan.statements[0].position
    assert all(f.compared > 0 for f in rep.fidelity.values())  # val_loss, loss re-logged and equal
    assert run.carried and "best_val" in run.carried or "prev_val" in run.carried
    assert (shapes.project / "best.pt").read_bytes() == shapes.best  # replays never touch the user's files


def test_a_prefix_and_suffix(shapes):
    check(shapes, ["a_init"], (), "prefix", expect_rows=1)
    rep = check(shapes, ["a_best"], (), "suffix", expect_rows=1)
    # best_val is carried across epochs outside the nested loop: saved with each checkpoint as a plain
    # variable, restored with the last one, so only the last epoch's post-code runs again
    (task,) = rep.plan.tasks
    assert (task.warm, task.start, task.carry_at) == (3, 4, 3)
    assert set(task.carry["globals"]) == {"best_val", "prev_val"}
    assert "best_val" in rep.plan.runs[0].note and "restored from checkpoints" in rep.plan.runs[0].note


def test_a_where_epoch_on_a_step_level_statement_restores_and_runs_what_is_needed(shapes):
    rep = replay(["a_grad"], yes=True, layout=shapes.layout, progress=False, workers=1, where="epoch = 2")
    assert not rep.failed and not rep.diverged
    (task,) = rep.plan.tasks
    assert (task.start, task.stop) == (2, 3)
    # prev_val/best_val carried: restored with checkpoint 1 (epoch 1 runs with train() skipped, then epoch 2)
    assert (task.warm, task.carry_at) == (1, 1) and task.warm_skip
    assert set(task.carry["globals"]) == {"best_val", "prev_val"}
    assert values(shapes.project, "a_grad", ("epoch", "step")) == values(shapes.gt, "a_grad", ("epoch", "step"))


def test_b_trainer_methods(shapes):
    rep = check(shapes, ["b_hist"], ("epoch",), "reexec", expect_rows=4)
    note = rep.plan.runs[0].note
    assert "total" in note and "line" in note  # train_epoch() returns what its loop accumulates
    check(shapes, ["b_best"], (), "suffix", expect_rows=1)


def test_b_step_level_in_a_method(shapes):
    rep = check(shapes, ["b_gstep"], ("epoch", "step"), "reexec", expect_rows=4 * 4)
    assert "via train_epoch()" in rep.plan.statements[0].position


def test_c_main_worker_train_with_argparse(shapes):
    rep = check(shapes, ["c_loss"], ("epoch", "step"), "reexec", expect_rows=3 * 4)
    assert "via train()" in rep.plan.statements[0].position  # placed at the call site, two calls down
    check(shapes, ["c_lr"], ("epoch",), "skip", expect_rows=3)
    check(shapes, ["c_final"], (), "suffix", expect_rows=1)


def test_d_generator_and_early_break(shapes):
    check(shapes, ["d_yhat"], ("epoch", "step"), "reexec", expect_rows=3)
    check(shapes, ["d_wnorm"], ("epoch",), "skip", expect_rows=3)
    check(shapes, ["d_final"], (), "suffix", expect_rows=1)
