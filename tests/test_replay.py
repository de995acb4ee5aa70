"""Replay of hindsight statements into recorded runs (issue 3, DESIGN decisions 4, 5, 7).

Every hindsight value is compared with a ground truth: the same script with
the statement present from the start, run with the same arguments in a
separate project. Scripts are tiny (numpy, or a small torch MLP) and each
project is recorded once per module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import base_env, git, git_state, make_project, q

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "replay"))
from replay_scripts import (  # noqa: E402
    NUMPY_FLAT, NUMPY_NOCKPT, NUMPY_NOISY, NUMPY_SGD, NUMPY_TOTAL, TORCH_MLP, run_parallel, with_statements,
)

from flordb.hindsight.api import replay  # noqa: E402
from flordb.store.catalog import open_catalog  # noqa: E402
from flordb.store.layout import locate  # noqa: E402

NORM = "float(np.linalg.norm(w))"

# Hindsight statements of the numpy scripts, per marker.
SGD_LINES = dict(
    pre=f'flor.log("w_start", {NORM})',
    step='flor.log("g_norm", float(np.linalg.norm(grad)))',
    post=[f'flor.log("w_norm", {NORM})', 'flor.log("ratio", 1.0 / (lr - 0.05))'],
    suffix=[f'flor.log("final_w", {NORM})', 'flor.log("last_err", float(np.abs(err).sum()))'],
)
SGD_GT = dict(SGD_LINES, post=f'flor.log("w_norm", {NORM})')  # ratio would crash the ground truth
# A tiny overhead budget: only the first and the last iteration are checkpointed.
SPARSE = NUMPY_SGD.replace("overhead=1e6", "overhead=1e-9")
SCRIPTS = {  # name: (recorded text, current text, ground-truth text)
    "sgd.py": (NUMPY_SGD, with_statements(NUMPY_SGD, **SGD_LINES), with_statements(NUMPY_SGD, **SGD_GT)),
    "total.py": (NUMPY_TOTAL, with_statements(NUMPY_TOTAL, post='flor.log("mean_loss", total / 4)'),
                 with_statements(NUMPY_TOTAL, post='flor.log("mean_loss", total / 4)')),
    "noisy.py": (NUMPY_NOISY, with_statements(NUMPY_NOISY, step='flor.log("noisy_g", float(grad.sum()))'), None),
    "nockpt.py": (NUMPY_NOCKPT, with_statements(NUMPY_NOCKPT, post=f'flor.log("nc_norm", {NORM})'),
                  with_statements(NUMPY_NOCKPT, post=f'flor.log("nc_norm", {NORM})')),
    "gone.py": (NUMPY_SGD, with_statements(NUMPY_SGD, post=f'flor.log("gone_norm", {NORM})'),
                with_statements(NUMPY_SGD, post=f'flor.log("gone_norm", {NORM})')),
    "sparse.py": (SPARSE, with_statements(SPARSE, post=f'flor.log("sp_norm", {NORM})'),
                  with_statements(SPARSE, post=f'flor.log("sp_norm", {NORM})')),
    "flat.py": (NUMPY_FLAT, with_statements(NUMPY_FLAT, pre=f'flor.log("flat_norm", {NORM})'),
                with_statements(NUMPY_FLAT, pre=f'flor.log("flat_norm", {NORM})')),
}
RUNS = [  # (script, --kwargs)
    ("sgd.py", ["lr=0.05"]),
    ("sgd.py", ["lr=0.02", "seed=1"]),
    ("total.py", ["lr=0.03"]),
    ("noisy.py", ["lr=0.03"]),
    ("nockpt.py", ["lr=0.03"]),
    ("gone.py", ["lr=0.03", "seed=7"]),
    ("flat.py", ["lr=0.03"]),
    ("sparse.py", ["lr=0.04", "epochs=5"]),
]


def setup_project(root: Path, texts: dict[str, str]) -> Path:
    project = make_project(root)
    (project / ".gitignore").write_text("data/\n")
    (project / "data").mkdir()
    (project / "data" / "scale.txt").write_text("2.5\n")
    (project / "notes.txt").write_text("tracked\n")
    git(project, "add", ".gitignore", "notes.txt")
    git(project, "commit", "-q", "-m", "project files")
    for name, text in texts.items():
        (project / name).write_text(text)
    return project


def kwargs(args):
    return ["--kwargs", *args] if args else []


@pytest.fixture(scope="module")
def np_proj(tmp_path_factory):
    """Numpy runs recorded without the hindsight statements; ground truth with them."""
    root = tmp_path_factory.mktemp("replay_np")
    project = setup_project(root / "proj", {n: t[0] for n, t in SCRIPTS.items()})
    gt = setup_project(root / "gt", {n: t[2] for n, t in SCRIPTS.items() if t[2] is not None})
    jobs = [(project, project / s, kwargs(a), None) for s, a in RUNS]
    jobs += [(gt, gt / s, kwargs(a), None) for s, a in RUNS if SCRIPTS[s][2] is not None]
    run_parallel(jobs)
    for name, t in SCRIPTS.items():  # the user adds the statements to the current code
        (project / name).write_text(t[1])
    (project / "notes.txt").write_text("tracked, with an uncommitted change\n")
    return SimpleNamespace(project=project, gt=gt, layout=locate(project))


def do_replay(ns, names, **kw):
    kw.setdefault("workers", 2)
    return replay(names, yes=True, layout=ns.layout, progress=False, **kw)


def table(project, name, script, loops=("epoch",), where=""):
    cols = ", ".join(["lr", "seed", *loops])
    df = q(project, f'SELECT {cols}, "{name}" FROM logs WHERE script = \'{script}\' AND "{name}" IS NOT NULL'
                    f" {where} ORDER BY ALL")
    return {tuple(r[:-1]): r[-1] for r in df.itertuples(index=False, name=None)}


def assert_equals_ground_truth(ns, name, script, loops=("epoch",), where="", expect_rows=None):
    got = table(ns.project, name, script, loops, where)
    want = table(ns.gt, name, script, loops, where)
    assert want, "ground truth has no rows"
    assert got == want  # exact, not approximate
    if expect_rows is not None:
        assert len(got) == expect_rows
    return got


def replay_ids(project, name, script):
    df = q(project, f'SELECT lr, epoch, "replay.{name}" AS r FROM logs WHERE script = \'{script}\''
                    f' AND "{name}" IS NOT NULL ORDER BY ALL')
    return {(lr, e): r for lr, e, r in df.itertuples(index=False, name=None)}


def replay_rows(project):
    with open_catalog(locate(project)) as cat:
        cols = ["replay_id", "run_id", "names", "version", "statement", "strategy", "iterations", "seconds",
                "status", "fidelity"]
        return [dict(zip(cols, r)) for r in cat.execute(f"SELECT {', '.join(cols)} FROM replays").fetchall()]


def record_count(project):
    with open_catalog(locate(project)) as cat:
        cat.ingest()
        return cat.execute("SELECT count(*) FROM records").fetchone()[0]


# -- numpy: positions, strategies, exactness ------------------------------------------------------


def test_epoch_level_after_and_before_the_nested_loop_equal_ground_truth(np_proj):
    rep = do_replay(np_proj, ["w_norm", "w_start"])
    assert not rep.failed and not rep.diverged
    assert {r.strategy for r in rep.plan.runs} == {"skip"}
    assert len(rep.plan.runs) == 2  # the two sgd.py runs, nothing else
    assert all(f.status == "ok" and f.compared > 0 for f in rep.fidelity.values())
    assert_equals_ground_truth(np_proj, "w_norm", "sgd.py", expect_rows=8)
    got = assert_equals_ground_truth(np_proj, "w_start", "sgd.py", expect_rows=8)
    # before the nested loop: the state at the start of the iteration (epoch 0: untrained zeros)
    assert got[(0.05, 0, 0)] == 0.0 and got[(0.02, 1, 0)] == 0.0
    wn = table(np_proj.project, "w_norm", "sgd.py")
    assert got[(0.05, 0, 2)] == wn[(0.05, 0, 1)]


def test_step_level_equals_ground_truth_for_every_step(np_proj):
    rep = do_replay(np_proj, ["g_norm"])
    assert not rep.failed and not rep.diverged
    assert {r.strategy for r in rep.plan.runs} == {"reexec"}
    assert_equals_ground_truth(np_proj, "g_norm", "sgd.py", loops=("epoch", "step"), expect_rows=2 * 4 * 4)


def test_running_total_read_after_the_loop_is_reexecuted_exactly(np_proj):
    rep = do_replay(np_proj, ["mean_loss"])
    assert not rep.failed and not rep.diverged
    (run,) = rep.plan.runs
    assert run.strategy == "reexec"
    assert "total" in run.note
    assert_equals_ground_truth(np_proj, "mean_loss", "total.py", expect_rows=4)


def test_running_total_fed_into_the_model_with_where_on_epoch(np_proj):
    """A replay that starts at epoch 2 must not warm up by skipping epoch 1's nested loop:
    the post-code there reads `total`, which only the loop body computes."""
    rep = do_replay(np_proj, ["mean_loss"], where="epoch >= 2", workers=1)
    assert not rep.failed
    assert [(t.start, t.stop, t.warm) for t in rep.plan.tasks] == [(2, 4, 0)]
    assert not rep.diverged, rep.fidelity
    assert_equals_ground_truth(np_proj, "mean_loss", "total.py", expect_rows=4)


def test_suffix_statements_equal_ground_truth(np_proj):
    rep = do_replay(np_proj, ["final_w"], where="lr = 0.05")
    assert not rep.failed and not rep.diverged
    assert [r.strategy for r in rep.plan.runs] == ["suffix"]
    assert_equals_ground_truth(np_proj, "final_w", "sgd.py", loops=(), where="AND lr = 0.05", expect_rows=1)


def test_suffix_reading_a_nested_loop_variable_equals_ground_truth(np_proj):
    rep = do_replay(np_proj, ["last_err"], where="lr = 0.05")
    assert not rep.failed, [r.log.read_text()[-500:] for r in rep.failed]
    assert_equals_ground_truth(np_proj, "last_err", "sgd.py", loops=(), where="AND lr = 0.05", expect_rows=1)


def test_flat_main_loop_with_where_on_epoch_restores_the_end_state(np_proj):
    rep = do_replay(np_proj, ["flat_norm"], where="epoch >= 3", workers=1)
    assert not rep.failed and not rep.diverged
    (task,) = rep.plan.tasks
    assert (task.start, task.stop) == (3, 5)
    assert task.restore_before == 2 and task.warm == 3  # no iteration before 3 re-executed
    assert_equals_ground_truth(np_proj, "flat_norm", "flat.py", where="AND epoch >= 3", expect_rows=2)
    assert table(np_proj.project, "flat_norm", "flat.py", where="AND epoch < 3") == {}


def test_skip_strategy_with_sparse_checkpoints_reruns_the_others(np_proj):
    rep = do_replay(np_proj, ["sp_norm"], where="epoch >= 2", workers=1)
    assert not rep.failed and not rep.diverged
    (run,) = rep.plan.runs
    assert run.strategy == "skip" and run.checkpoints == (2, 5)
    assert "without checkpoint" in run.note
    (task,) = rep.plan.tasks
    assert (task.warm, task.start, task.stop) == (0, 2, 5)
    assert sorted(task.checkpoints) == [0, 4]
    assert_equals_ground_truth(np_proj, "sp_norm", "sparse.py", where="AND epoch >= 2", expect_rows=3)


# -- narrowing, workers, duplicates ---------------------------------------------------------------


def test_where_on_an_arg_narrows_the_runs(np_proj):
    rep = do_replay(np_proj, ["w_norm"], where="lr > 0.03", workers=1)
    assert not rep.failed
    assert {r.args["lr"] for r in rep.plan.runs} == {0.05}
    assert {t.run_id for t in rep.plan.tasks} == {rep.plan.runs[0].run_id}
    assert {t.args["lr"] for t in rep.plan.tasks} == {0.05}
    assert_equals_ground_truth(np_proj, "w_norm", "sgd.py", expect_rows=8)
    ids = replay_ids(np_proj.project, "w_norm", "sgd.py")
    new = rep.plan.runs[0].replay_id
    assert {k for k, v in ids.items() if v == new} == {(0.05, e) for e in range(4)}


def test_where_on_epoch_narrows_the_iterations(np_proj):
    rep = do_replay(np_proj, ["g_norm"], where="epoch >= 2 AND lr < 0.03", workers=1)
    assert not rep.failed and not rep.diverged
    (run,) = rep.plan.runs
    assert run.iterations == [2, 3]
    assert [(t.start, t.stop) for t in rep.plan.tasks] == [(2, 4)]
    assert rep.plan.tasks[0].warm <= 2
    assert_equals_ground_truth(np_proj, "g_norm", "sgd.py", loops=("epoch", "step"), expect_rows=32)
    df = q(np_proj.project, 'SELECT DISTINCT epoch FROM logs WHERE "replay.g_norm" = ? ORDER BY 1'
           .replace("?", f"'{run.replay_id}'"))
    assert list(df["epoch"]) == [2, 3]


def test_two_workers_equal_one_worker_and_no_duplicates(np_proj):
    one = do_replay(np_proj, ["g_norm"], workers=1, where="lr = 0.05")
    assert not one.failed and not one.diverged
    assert len(one.plan.tasks) == 1
    before_vals = table(np_proj.project, "g_norm", "sgd.py", ("epoch", "step"))
    before = record_count(np_proj.project)
    two = do_replay(np_proj, ["g_norm"], workers=2, where="lr = 0.05")
    assert not two.failed and not two.diverged
    ranges = sorted((t.start, t.stop) for t in two.plan.tasks)
    assert ranges == [(0, 2), (2, 4)]  # contiguous ranges, one per worker
    assert table(np_proj.project, "g_norm", "sgd.py", ("epoch", "step")) == before_vals
    assert record_count(np_proj.project) == before
    assert_equals_ground_truth(np_proj, "g_norm", "sgd.py", loops=("epoch", "step"))
    df = q(np_proj.project, "SELECT count(*) AS n, count(DISTINCT (epoch, step)) AS d FROM logs"
                            " WHERE script = 'sgd.py' AND lr = 0.05 AND g_norm IS NOT NULL")
    assert df["n"][0] == df["d"][0] == 16


# -- fallbacks, failures, divergence ----------------------------------------------------------------


def test_run_without_checkpointing_falls_back_to_full_reexecution(np_proj):
    rep = do_replay(np_proj, ["nc_norm"], where="epoch >= 2")
    assert not rep.failed and not rep.diverged
    (run,) = rep.plan.runs
    assert run.strategy == "reexec"
    assert run.checkpoints[0] == 0
    assert "checkpoint" in run.note and "re-execution" in run.note
    assert {t.warm for t in rep.plan.tasks} == {0}  # nothing to restore: every task starts at 0
    assert len(rep.plan.tasks) == 1  # so 2 workers would only repeat work: one task, not two
    assert_equals_ground_truth(np_proj, "nc_norm", "nockpt.py", where="AND epoch >= 2", expect_rows=2)


def test_deleted_checkpoint_objects_fall_back_to_full_reexecution(np_proj):
    layout = np_proj.layout
    with open_catalog(layout) as cat:
        cat.ingest()
        (run_id,) = cat.execute("SELECT run_id FROM runs WHERE script = 'gone.py' AND mode = 'record'").fetchone()
        mine = {d for (d,) in cat.execute("SELECT digest FROM checkpoints WHERE run_id = ?", [run_id]).fetchall()}
        others = {d for (d,) in cat.execute("SELECT digest FROM checkpoints WHERE run_id <> ?", [run_id]).fetchall()}
    assert mine
    for digest in mine - others:
        (layout.objects / digest[:2] / digest[2:]).unlink()
    rep = do_replay(np_proj, ["gone_norm"], where="epoch >= 2")
    assert not rep.failed and not rep.diverged
    (run,) = rep.plan.runs
    assert run.checkpoints[0] == 0
    assert "checkpoint" in run.note and "re-execution" in run.note
    assert_equals_ground_truth(np_proj, "gone_norm", "gone.py", where="AND epoch >= 2", expect_rows=2)


def test_worker_failure_is_reported_and_other_runs_are_kept(np_proj, capsys):
    rep = do_replay(np_proj, ["ratio"])
    assert len(rep.plan.runs) == 2
    (bad,) = rep.failed
    assert bad.task.args["lr"] == 0.05
    assert bad.returncode != 0
    assert bad.log.exists() and "ZeroDivisionError" in bad.log.read_text()
    err = capsys.readouterr().err
    assert str(bad.log) in err and "ZeroDivisionError" in err
    ok = table(np_proj.project, "ratio", "sgd.py")
    assert ok == {(0.02, 1, e): 1.0 / (0.02 - 0.05) for e in range(4)}
    statuses = {r["run_id"]: r["status"] for r in replay_rows(np_proj.project) if r["names"] == ["ratio"]}
    assert statuses[bad.task.run_id] == "failed"
    assert sorted(statuses.values()) == ["failed", "ok"]


def test_nondeterministic_script_is_reported_diverged(np_proj, capsys):
    rep = do_replay(np_proj, ["noisy_g"])
    assert not rep.failed
    assert len(rep.diverged) == 1
    fid = rep.fidelity[rep.diverged[0]]
    assert fid.status == "diverged" and "loss" in fid.first
    assert "DIVERGED" in capsys.readouterr().err
    rows = [r for r in replay_rows(np_proj.project) if r["names"] == ["noisy_g"]]
    assert [r["status"] for r in rows] == ["diverged"]
    assert "loss" in rows[0]["fidelity"]


def test_cli_exit_1_on_divergence(np_proj):
    proc = subprocess.run([sys.executable, "-m", "flordb", "replay", "noisy_g", "--yes", "--workers", "1",
                           "--where", "epoch = 0"], cwd=np_proj.project, env=base_env(np_proj.project),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    assert "DIVERGED" in proc.stderr


def test_cli_without_yes_and_without_terminal_exits_2(np_proj):
    before = len(replay_rows(np_proj.project))
    proc = subprocess.run([sys.executable, "-m", "flordb", "replay", "w_norm"], cwd=np_proj.project,
                          env=base_env(np_proj.project), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1 and "--yes" in errors[0]
    assert len(replay_rows(np_proj.project)) == before


# -- the user's files --------------------------------------------------------------------------------


def test_gitignored_data_is_reachable_and_git_state_unchanged(np_proj):
    project = np_proj.project
    assert "data/" in (project / ".gitignore").read_text()
    before = git_state(project)
    assert "notes.txt" in before["status"]  # uncommitted changes present
    rep = do_replay(np_proj, ["w_norm", "w_start"], workers=1)  # sgd.py reads data/scale.txt
    assert not rep.failed and not rep.diverged
    assert git_state(project) == before
    trees = [d for d in (np_proj.layout.replays / "trees").iterdir() if d.is_dir()]
    assert trees  # each task ran in a private tree holding a copy of the ignored input
    assert all((d / "data" / "scale.txt").read_text() == "2.5\n" for d in trees)
    assert not any((d / "data").is_symlink() or (d / "data" / "scale.txt").is_symlink() for d in trees)


def test_replays_table_and_provenance(np_proj):
    rows = [r for r in replay_rows(np_proj.project) if r["names"] == ["w_norm", "w_start"]]
    assert rows and all(r["status"] == "ok" and r["seconds"] > 0 and r["strategy"] == "skip" for r in rows)
    assert all("w_norm" in r["statement"] and "w_start" in r["statement"] for r in rows)
    ids = set(replay_ids(np_proj.project, "w_start", "sgd.py").values())
    assert ids and ids <= {r["replay_id"] for r in rows}
    # values the replays logged again (fidelity) are checked, not served: no extra `val` rows
    df = q(np_proj.project, "SELECT count(*) AS n FROM logs WHERE script = 'sgd.py' AND val IS NOT NULL")
    assert df["n"][0] == 8


# -- torch: scheduler after the nested loop, two runs with different args -------------------------


TORCH_LINES = dict(
    pre='flor.log("t_start", net[0].weight.norm().item())',
    step='flor.log("t_grad", torch.nn.utils.clip_grad_norm_(net.parameters(), float("inf")).item())',
    post=['flor.log("t_norm", net[0].weight.norm().item())', 'flor.log("cur_lr", opt.param_groups[0]["lr"])'],
)
TORCH_RUNS = [["lr=0.05"], ["lr=0.02", "seed=3"]]


@pytest.fixture(scope="module")
def torch_proj(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay_torch")
    project = setup_project(root / "proj", {"mlp.py": TORCH_MLP})
    gt = setup_project(root / "gt", {"mlp.py": with_statements(TORCH_MLP, **TORCH_LINES)})
    run_parallel([(p, p / "mlp.py", kwargs(a), None) for p in (project, gt) for a in TORCH_RUNS])
    (project / "mlp.py").write_text(with_statements(TORCH_MLP, **TORCH_LINES))
    return SimpleNamespace(project=project, gt=gt, layout=locate(project))


def test_torch_epoch_level_with_scheduler_equals_ground_truth(torch_proj):
    rep = do_replay(torch_proj, ["t_norm", "cur_lr", "t_start"])
    assert not rep.failed and not rep.diverged
    assert [r.strategy for r in rep.plan.runs] == ["skip", "skip"]
    for name in ("t_norm", "cur_lr", "t_start"):
        assert_equals_ground_truth(torch_proj, name, "mlp.py", expect_rows=8)
    lrs = table(torch_proj.project, "cur_lr", "mlp.py")
    # StepLR(step_size=1, gamma=0.5) stepped once per epoch: halved exactly once each time
    assert [lrs[(0.05, 0, e)] for e in range(4)] == [0.05 * 0.5 ** (e + 1) for e in range(4)]
    starts = table(torch_proj.project, "t_start", "mlp.py")
    norms = table(torch_proj.project, "t_norm", "mlp.py")
    assert all(starts[(lr, s, e + 1)] == norms[(lr, s, e)] for lr, s, e in norms if e < 3)


def test_torch_step_level_one_and_two_workers_equal_ground_truth(torch_proj):
    one = do_replay(torch_proj, ["t_grad"], workers=1)
    assert not one.failed and not one.diverged
    assert len(one.plan.tasks) == 2
    first = assert_equals_ground_truth(torch_proj, "t_grad", "mlp.py", ("epoch", "step"), expect_rows=32)
    count = record_count(torch_proj.project)
    two = do_replay(torch_proj, ["t_grad"], workers=2, where="lr = 0.02")
    assert not two.failed and not two.diverged
    assert sorted((t.start, t.stop) for t in two.plan.tasks) == [(0, 2), (2, 4)]
    assert table(torch_proj.project, "t_grad", "mlp.py", ("epoch", "step")) == first
    assert record_count(torch_proj.project) == count


def test_query_fills_the_gaps_left_by_a_narrowed_replay(np_proj):
    from flordb.api import query

    rep = do_replay(np_proj, ["flat_norm"], where="epoch = 4", workers=1)
    assert not rep.failed
    df = query("SELECT epoch, loss, flat_norm FROM logs WHERE script = 'flat.py' ORDER BY epoch", replay="yes",
               layout=np_proj.layout)
    assert len(df) == 5 and df["loss"].notna().all()
    assert df["flat_norm"].notna().all()


def test_query_fills_runs_recorded_before_the_statement_existed(tmp_path):
    """A newer run logs the column; the older runs of the same script get it by replay."""
    from flordb.api import query

    body = NUMPY_FLAT
    statement = {"pre": 'flor.log("w_sum", float(w.sum()))'}
    project = setup_project(tmp_path / "proj", {"flat.py": body})
    run_parallel([(project, project / "flat.py", kwargs(["lr=0.05"]), None)])
    (project / "flat.py").write_text(with_statements(body, **statement))
    run_parallel([(project, project / "flat.py", kwargs(["lr=0.02"]), None)])
    layout = locate(project)
    sql = "SELECT lr, epoch, w_sum FROM logs ORDER BY lr, epoch"
    before = query(sql, replay="no", layout=layout)
    assert before[before["lr"] == 0.05]["w_sum"].isna().all()  # the old run never logged it
    after = query(sql, replay="yes", layout=layout)
    assert after["w_sum"].notna().all() and len(after) == 10
    recorded_lr = after[after["lr"] == 0.02]["w_sum"].tolist()
    assert recorded_lr == before[before["lr"] == 0.02]["w_sum"].tolist()  # recorded values untouched
    again = query(sql, replay="yes", layout=layout)  # nothing left to fill: no second replay
    assert again.equals(after)
    with open_catalog(layout) as cat:
        assert cat.execute("SELECT count(*) FROM replays").fetchone()[0] == 1


def test_workers_use_the_recorded_runs_torch_thread_count(torch_proj):
    """The MLP sets torch.set_num_threads(1): runs record it and replay tasks ask for it."""
    with open_catalog(torch_proj.layout) as cat:
        cat.ingest()
        threads = {r[0] for r in cat.execute("SELECT threads FROM runs WHERE mode = 'record'").fetchall()}
        from flordb.hindsight.plan import plan_replay

        plan = plan_replay(cat, ["t_norm"], workers=2)
    assert threads == {1}
    assert plan.tasks and {t.threads for t in plan.tasks} == {1}


def test_a_statement_that_logs_nothing_in_old_runs_is_not_replayed_on_every_query(tmp_path):
    """Conditional logging that never fires in the old run: one replay, then the gap is left alone."""
    from flordb.api import query

    project = setup_project(tmp_path / "proj", {"flat.py": NUMPY_FLAT})
    run_parallel([(project, project / "flat.py", kwargs(["lr=0.05"]), None)])
    (project / "flat.py").write_text(with_statements(
        NUMPY_FLAT, pre='if epoch >= 100:\n            flor.log("late", 1.0)'))
    run_parallel([(project, project / "flat.py", kwargs(["lr=0.02", "epochs=101"]), None)])
    layout = locate(project)
    sql = "SELECT lr, epoch, late FROM logs WHERE late IS NOT NULL"
    for _ in range(3):
        assert len(query(sql, replay="yes", layout=layout)) == 1  # only the new run ever logs it
    with open_catalog(layout) as cat:
        assert cat.execute("SELECT count(*) FROM replays").fetchone()[0] == 1
