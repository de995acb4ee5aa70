"""Multiversion hindsight logging (issue 4, DESIGN decisions 3, 5, 6).

A project records runs of five versions of a training script (examples/evolution
v1..v3, plus a v0 without the step loop), then the current train.py becomes v4
(v3 plus a grad_norm statement inside the step loop). A query that names
grad_norm fills it for every run whose version can take the statement; the
values equal ground-truth runs of each version with the statement written in
by hand.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO_ROOT, git_state, make_project, q

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "replay"))
from replay_scripts import run_parallel  # noqa: E402

from flordb.hindsight import executor as executor_mod  # noqa: E402
from flordb.hindsight.plan import plan_replay  # noqa: E402
from flordb.api import query  # noqa: E402
from flordb.store.catalog import open_catalog  # noqa: E402
from flordb.store.layout import locate  # noqa: E402

EVOLUTION = REPO_ROOT / "examples" / "evolution"
EPOCHS = 3
STATEMENT = 'flor.log("grad_norm", torch.nn.utils.clip_grad_norm_({model}.parameters(), float("inf")).item())'


def version_text(label: str) -> str:
    if label != "v0":
        return (EVOLUTION / f"{label}_train.py").read_text()
    v1 = version_text("v1")  # full-batch training: no step loop for the statement to live in
    body = v1[v1.index("        net.train()\n"):]
    v0 = v1.replace(body, (
        "        net.train()\n"
        "        optimizer.zero_grad()\n"
        "        loss = F.cross_entropy(net(train_x), train_y)\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        '        flor.log("loss", loss.item())\n'
    ))
    return v0.replace("Version 1: the first training script (enumerate over the loader)",
                      "Version 0: full-batch training")


def ground_truth_text(label: str) -> str:
    """The version with the statement written in by hand, right after the step's loss log."""
    model = "net" if label == "v1" else "model"
    out = []
    for line in version_text(label).splitlines(keepends=True):
        out.append(line)
        if line.strip() == 'flor.log("loss", loss.item())':
            out.append(line[: len(line) - len(line.lstrip())] + STATEMENT.format(model=model) + "\n")
    text = "".join(out)
    assert text.count('"grad_norm"') == 1
    return text


HISTORY = [  # (version, lr of each run), in the order the user recorded them
    ("v0", [0.002]),
    ("v1", [0.001, 0.01]),
    ("v2", [0.003]),
    ("v3", [0.001, 0.003]),
]
SQL = "SELECT version, lr, epoch, step, loss, grad_norm FROM logs ORDER BY ALL"


def kw(lr):
    return ["--kwargs", f"epochs={EPOCHS}", f"lr={lr}"]


@contextlib.contextmanager
def capture_tasks():
    """The tasks the local executor really runs."""
    original = executor_mod.LocalExecutor.run
    seen = []

    def run(self, tasks):
        seen.extend(tasks)
        return original(self, tasks)

    executor_mod.LocalExecutor.run = run
    try:
        yield seen
    finally:
        executor_mod.LocalExecutor.run = original


@pytest.fixture(scope="module")
def evo(tmp_path_factory):
    root = tmp_path_factory.mktemp("evolution")
    project = make_project(root / "proj")
    gt = make_project(root / "gt")
    for label, _ in HISTORY[1:]:
        (gt / f"{label}.py").write_text(ground_truth_text(label))
    gt_jobs = [(gt, gt / f"{label}.py", kw(lr), None) for label, lrs in HISTORY[1:] for lr in lrs]
    versions = {}  # label -> snapshot commit
    for k, (label, lrs) in enumerate(HISTORY):
        (project / "train.py").write_text(version_text(label))
        # each version's runs, plus a share of the ground-truth runs, two processes at a time
        run_parallel([(project, project / "train.py", kw(lr), None) for lr in lrs] + gt_jobs[k::len(HISTORY)])
        seen = set(q(project, "SELECT DISTINCT version FROM logs")["version"])
        (new,) = seen - set(versions.values())
        versions[label] = new
    (project / "train.py").write_text((EVOLUTION / "v4_train.py").read_text())  # the user adds the statement
    layout = locate(project)
    before = git_state(project)
    err = io.StringIO()
    with capture_tasks() as tasks, contextlib.redirect_stderr(err):
        df = query(SQL, replay="yes", layout=layout)
    return SimpleNamespace(project=project, gt=gt, layout=layout, versions=versions, label={v: k for k, v in
                           versions.items()}, df=df, tasks=list(tasks), stderr=err.getvalue(), before=before,
                           after=git_state(project))


def ground_truth(evo) -> dict:
    df = q(evo.gt, "SELECT script, lr, epoch, step, grad_norm FROM logs WHERE grad_norm IS NOT NULL ORDER BY ALL")
    return {(s[:-3], lr, e, st): g for s, lr, e, st, g in df.itertuples(index=False, name=None)}


def replayed(evo, df=None) -> dict:
    df = q(evo.project, SQL) if df is None else df
    return {(evo.label[v], lr, e, st): g for v, lr, e, st, _, g in df.itertuples(index=False, name=None)
            if evo.label[v] != "v0"}


def run_ids(evo) -> dict:
    df = q(evo.project, "SELECT DISTINCT run_id, version, lr FROM logs")
    return {(evo.label[v], lr): r for r, v, lr in df.itertuples(index=False, name=None)}


def replays_table(evo, status: str = "ran") -> list[dict]:
    """Rows of ``replays``: the replays that ran, or those with the given status ("refused")."""
    cols = ["replay_id", "run_id", "names", "version", "statement", "strategy", "iterations", "seconds",
            "estimate", "status", "started", "fidelity"]
    where = "status <> 'refused'" if status == "ran" else f"status = '{status}'"
    with open_catalog(evo.layout) as cat:
        return [dict(zip(cols, r)) for r in cat.execute(
            f"SELECT {', '.join(cols)} FROM replays WHERE {where}").fetchall()]


# -----------------------------------------------------------------------------------------------


def test_query_fills_every_run_of_every_version_with_ground_truth_values(evo):
    df = evo.df
    assert set(df["version"]) == set(evo.versions.values())
    got = replayed(evo, df)
    want = ground_truth(evo)
    assert len(want) == 5 * EPOCHS * 24
    assert got == want  # every run, every epoch, every step, exactly
    ids = run_ids(evo)
    executed = {t.run_id for t in evo.tasks}
    assert executed == {ids[(label, lr)] for label, lrs in HISTORY[1:] for lr in lrs}
    for run in executed:
        covered = sorted(i for t in evo.tasks if t.run_id == run for i in range(t.start, t.stop))
        assert covered == list(range(EPOCHS))


def test_version_without_the_anchor_code_is_refused_and_others_answer(evo):
    v0 = evo.versions["v0"]
    rows = evo.df[evo.df["version"] == v0]
    assert len(rows) == EPOCHS and rows["grad_norm"].isna().all()  # v0 still answers, with NULL
    assert evo.df[evo.df["version"] != v0]["grad_norm"].notna().all()
    left_out = [line for line in evo.stderr.splitlines() if "left out" in line]
    assert len(left_out) == 1 and v0[:7] in left_out[0]
    assert "step" in left_out[0] and "counterpart" in left_out[0]  # the reason, in words
    assert all(t.version != v0 and evo.label.get(t.version) != "v0" for t in evo.tasks)
    (refused,) = replays_table(evo, status="refused")  # remembered, so later queries do not retry it
    assert refused["version"] == v0 and "counterpart" in refused["fidelity"]


def test_replay_leaves_the_users_git_state_alone(evo):
    assert evo.before == evo.after


def test_patched_versions_are_commits_whose_parent_is_the_snapshot(evo):
    rows = replays_table(evo)
    assert len(rows) == 5
    with open_catalog(evo.layout) as cat:
        info = {v: (g, p, k) for v, g, p, k in cat.execute(
            "SELECT version, git_dir, parent, kind FROM versions").fetchall()}
        run_version = dict(cat.execute("SELECT run_id, version FROM runs").fetchall())
    for row in rows:
        patched, original = row["version"], run_version[row["run_id"]]
        git_dir, parent, kind = info[patched]
        assert kind == "patched" and parent == original
        assert subprocess.run(["git", "--git-dir", git_dir, "rev-parse", f"{patched}^"], capture_output=True,
                              text=True, check=True).stdout.strip() == original
        # the patch is the old text plus exactly one inserted line (propagation keeps the rest)
        old, new = (subprocess.run(["git", "--git-dir", git_dir, "show", f"{c}:train.py"], capture_output=True,
                                   text=True, check=True).stdout for c in (original, patched))
        diff = [d for d in difflib.ndiff(old.splitlines(), new.splitlines()) if d[:1] in "+-"]
        assert len(diff) == 1 and diff[0].startswith("+ ") and '"grad_norm"' in diff[0]


def test_replays_table_and_provenance_column(evo):
    rows = replays_table(evo)
    for row in rows:
        assert row["names"] == ["grad_norm"]
        assert '"grad_norm"' in row["statement"] and "train.py" in row["statement"]
        assert row["status"] == "ok" and row["seconds"] > 0 and row["started"] is not None
        assert row["strategy"] == "reexec"
    by_run = {r["run_id"]: r["replay_id"] for r in rows}
    df = q(evo.project, 'SELECT run_id, version, loss, grad_norm, "replay.grad_norm" AS src FROM logs'
                        " WHERE step IS NOT NULL")
    replayed_rows = df[df["grad_norm"].notna()]
    assert (replayed_rows["src"] == replayed_rows["run_id"].map(by_run)).all()
    assert df[df["grad_norm"].isna()]["src"].isna().all()
    with pytest.raises(Exception, match="replay.loss"):  # recorded names carry no replay provenance
        q(evo.project, 'SELECT "replay.loss" FROM logs')


def test_where_on_version_arg_and_epoch_narrows_the_plan(evo):
    v3, v1 = evo.versions["v3"], evo.versions["v1"]
    ids = run_ids(evo)
    with open_catalog(evo.layout) as cat:
        by_version = plan_replay(cat, ["grad_norm"], where=f"version = '{v3}'", workers=2)
        by_arg = plan_replay(cat, ["grad_norm"], where="lr = 0.01", workers=2)
        by_epoch = plan_replay(cat, ["grad_norm"], where="epoch >= 2", workers=1)
        everything = plan_replay(cat, ["grad_norm"], workers=1)
    assert {r.run_id for r in by_version.runs} == {ids[("v3", 0.001)], ids[("v3", 0.003)]}
    assert {t.run_id for t in by_version.tasks} == {ids[("v3", 0.001)], ids[("v3", 0.003)]}
    assert [r.run_id for r in by_arg.runs] == [ids[("v1", 0.01)]] and by_arg.runs[0].version == v1
    assert len(everything.runs) == 5 and {r.iterations == [0, 1, 2] for r in everything.runs} == {True}
    assert len(by_epoch.runs) == 5
    assert all(r.iterations == [2] for r in by_epoch.runs)
    assert all((t.start, t.stop) == (2, 3) for t in by_epoch.tasks)
    assert by_epoch.estimate < everything.estimate


def test_where_on_version_and_epoch_narrows_the_executed_tasks(evo, capsys):
    from flordb.hindsight.api import replay

    v3 = evo.versions["v3"]
    ids = run_ids(evo)
    before = q(evo.project, "SELECT count(*) AS n FROM logs WHERE grad_norm IS NOT NULL")["n"][0]
    with capture_tasks() as tasks:
        rep = replay(["grad_norm"], where=f"version = '{v3}' AND epoch >= 2", workers=2, yes=True,
                     layout=evo.layout, progress=False)
    assert not rep.failed and not rep.diverged
    assert {t.run_id for t in tasks} == {ids[("v3", 0.001)], ids[("v3", 0.003)]}
    assert all(t.start >= 2 and t.stop == 3 for t in tasks)
    # started from the last checkpoint before epoch 2 (the adaptive policy may have skipped epoch 1's)
    assert all(t.warm == max(c for c in t.checkpoints if c < 2) for t in tasks)
    assert "left out" not in capsys.readouterr().err  # v0 is not selected, so not refused either
    assert replayed(evo) == ground_truth(evo)
    assert q(evo.project, "SELECT count(*) AS n FROM logs WHERE grad_norm IS NOT NULL")["n"][0] == before
    fresh = {r.replay_id for r in rep.plan.runs}
    df = q(evo.project, 'SELECT DISTINCT version, epoch, "replay.grad_norm" AS src FROM logs'
                        " WHERE grad_norm IS NOT NULL")
    assert set(df[df["src"].isin(fresh)][["version", "epoch"]].itertuples(index=False, name=None)) == {(v3, 2)}


def test_changed_statement_warns_then_rematerializes(evo, capsys):
    project, layout = evo.project, evo.layout
    text = (project / "train.py").read_text()
    old = "torch.nn.utils.clip_grad_norm_(model.parameters(), float(\"inf\")).item())"
    assert old in text
    (project / "train.py").write_text(text.replace(old, "2 * torch.nn.utils.clip_grad_norm_(model.parameters(),"
                                                        " float(\"inf\")).item())"))
    want = ground_truth(evo)
    capsys.readouterr()
    df = query(SQL, replay="no", layout=layout)
    err = capsys.readouterr().err
    assert "grad_norm" in err and "2 * torch" in err  # says the values come from another statement
    assert replayed(evo, df) == want  # ... and keeps them
    before = git_state(project)
    where = "lr = 0.01 AND epoch = 0"
    with capture_tasks() as tasks:
        df = query(f"SELECT version, lr, epoch, step, loss, grad_norm FROM logs WHERE {where} ORDER BY ALL",
                   replay="yes", layout=layout)
    assert git_state(project) == before
    ids = run_ids(evo)
    assert [(t.run_id, t.start, t.stop) for t in tasks] == [(ids[("v1", 0.01)], 0, 1)]
    got = replayed(evo, df)
    assert len(got) == 24
    assert got == {k: 2 * want[k] for k in got}
    # the rest still comes from the earlier statement: a query reading it must still say so
    capsys.readouterr()
    df = query(SQL, replay="no", layout=layout)
    assert "2 * torch" in capsys.readouterr().err
    assert replayed(evo, df) == {k: 2 * v if (k[0], k[1], k[2]) == ("v1", 0.01, 0) else v for k, v in want.items()}
    # ... while the rows already re-materialized answer without a warning, and are not replayed again
    with capture_tasks() as tasks:
        df = query(f"SELECT version, lr, epoch, step, loss, grad_norm FROM logs WHERE {where} ORDER BY ALL",
                   replay="yes", layout=layout)
    assert tasks == [] and "2 * torch" not in capsys.readouterr().err
    assert replayed(evo, df) == got
