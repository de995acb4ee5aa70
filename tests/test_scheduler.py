"""The replay scheduler, claims and cost calibration (issue 10, DESIGN decision 7).

Pure tests of the packing rule first; then small numpy projects: resources
recorded by runs, plans that never oversubscribe, a killed worker retried,
two concurrent queries producing each value once, and the cost model
calibrated by the replays that ran.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import base_env

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "replay"))
from replay_scripts import NUMPY_SGD, run_parallel, with_statements  # noqa: E402
from test_replay import kwargs, setup_project  # noqa: E402

from flordb.hindsight.api import render_plan, replay  # noqa: E402
from flordb.hindsight.executors import local as local_mod  # noqa: E402
from flordb.hindsight.executors.scheduler import GIB, Pool, Resources, need, plan_workers, simulate  # noqa: E402
from flordb.hindsight.plan import plan_replay  # noqa: E402
from flordb.store.catalog import open_catalog  # noqa: E402
from flordb.store.claims import BUSY, DONE, OK, Claims  # noqa: E402
from flordb.store.layout import locate  # noqa: E402

NORM = 'flor.log("w_norm", float(np.linalg.norm(w)))'


class T:
    """A stand-in task: what the scheduler reads."""

    def __init__(self, estimate, threads=1, memory=0, gpus=0):
        self.estimate, self.threads, self.memory, self.gpus = estimate, threads, memory, gpus


# -- the packing rule ---------------------------------------------------------------------------------


def test_the_plan_says_workers_and_why():
    assert plan_workers([Resources(2)] * 3, Resources(2)).reason == "2-thread runs on 2 cores: 1 worker"
    assert plan_workers([Resources(1)] * 3, Resources(2)).reason == "1-thread runs on 2 cores: 2 workers"
    capped = plan_workers([Resources(1)] * 8, Resources(8), max_workers=3)
    assert capped.workers == 3 and capped.reason.endswith("(--workers 3)")
    by_memory = plan_workers([Resources(1, 6 * GIB)] * 4, Resources(8, 13 * GIB))
    assert by_memory.workers == 2 and "6.0 of 13.0 GiB each" in by_memory.reason
    assert plan_workers([Resources(1, 0, 1)] * 4, Resources(8, 0, 1)).workers == 1  # one GPU
    assert plan_workers([Resources(4)], Resources(2)).workers == 1  # too big: runs alone, never refused


def test_admission_never_oversubscribes_cores_memory_or_gpus():
    rng = random.Random(7)
    cap = Resources(cpus=6, memory=10 * GIB, gpus=2)
    tasks = [T(rng.uniform(1, 5), rng.choice([1, 2, 3]), rng.choice([0, 2 * GIB, 4 * GIB]), rng.choice([0, 0, 1]))
             for _ in range(60)]
    pool, pending, running, now, peak = Pool(cap, workers=5), sorted(tasks, key=lambda t: -t.estimate), [], 0.0, 0
    while pending or running:
        for t in pool.admit(pending):
            running.append((now + t.estimate, t))
        peak = max(peak, len(running))
        assert pool.cpus <= cap.cpus and pool.memory <= cap.memory and pool.gpus <= cap.gpus
        assert len(running) <= 5
        running.sort(key=lambda x: x[0])
        now, t = running.pop(0)
        pool.give(need(t))
    assert peak >= 2 and pool.running == 0


def test_the_estimate_simulates_the_same_rule():
    assert simulate([T(10), T(10), T(5)], Resources(2), 2) == 15.0  # 1-thread tasks side by side
    assert simulate([T(10, 2), T(10, 2)], Resources(2), 2) == 20.0  # 2-thread tasks one after the other
    assert simulate([T(10), T(10)], Resources(2), 1) == 20.0  # --workers 1


class FakeExecutor:
    """An executor whose tasks fail per a script: exercises the shared loop (retry, Ctrl-C)."""

    def __init__(self, outcomes, interrupt_after=None):
        from flordb.hindsight.executors.base import Executor

        class _E(Executor):
            name = "fake"

            def capacity(_self):
                return Resources(2)

            def start(_self, task, attempt):
                self.started.append((task.task_id, attempt))
                return (task.task_id, attempt)

            def wait(_self, handles, timeout):
                if interrupt_after is not None and len(self.started) >= interrupt_after:
                    raise KeyboardInterrupt
                return [(h, self.outcomes[h[0]].pop(0), 0.1, Path("/dev/null")) for h in handles]

            def cancel(_self, handles):
                self.cancelled.extend(handles)

            def discard(_self, task):
                self.discarded.append(task.task_id)

        self.outcomes, self.started, self.cancelled, self.discarded = outcomes, [], [], []
        self.executor = _E(workers=2, progress=False)


def fake_tasks(*ids):
    tasks = []
    for i in ids:
        t = T(1.0)
        t.task_id = i
        tasks.append(t)
    return tasks


def test_a_failed_task_is_retried_once_then_reported_without_losing_the_others():
    fake = FakeExecutor({"a": [1, 0], "b": [0], "c": [9, 9]})
    results = {r.task.task_id: r for r in fake.executor.run(fake_tasks("a", "b", "c"))}
    assert {k: (r.ok, r.attempts) for k, r in results.items()} == {"a": (True, 2), "b": (True, 1), "c": (False, 2)}
    assert sorted(fake.discarded) == ["a", "c"]  # what a failed attempt wrote is set aside before the retry


def test_ctrl_c_cancels_every_running_task():
    fake = FakeExecutor({"a": [0], "b": [0], "c": [0]}, interrupt_after=2)
    with pytest.raises(KeyboardInterrupt):
        fake.executor.run(fake_tasks("a", "b", "c"))
    assert sorted(fake.cancelled) == [("a", 1), ("b", 1)]


# -- projects ------------------------------------------------------------------------------------------

KILL = '''if epoch == 2 and os.environ.get("FLORDB_REPLAY_TASK") and not os.path.exists({mark!r}):
            open({mark!r}, "w").close()
            os.kill(os.getpid(), 9)  # a worker killed mid-task, once'''


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    root = tmp_path_factory.mktemp("sched")
    mark = str(root / "killed-once")
    killer = "import os\n" + with_statements(NUMPY_SGD, pre=KILL.format(mark=mark))
    texts = {"sgd.py": NUMPY_SGD, "kill.py": killer}
    project = setup_project(root / "proj", texts)
    run_parallel([(project, project / "sgd.py", kwargs(["lr=0.05"]), None),
                  (project, project / "sgd.py", kwargs(["lr=0.02", "seed=1"]), None),
                  (project, project / "kill.py", kwargs(["lr=0.03"]), None)])
    (project / "sgd.py").write_text(with_statements(NUMPY_SGD, post=NORM,
                                                    step='flor.log("g_sum", float(grad.sum()))'))
    (project / "kill.py").write_text(with_statements(killer, post='flor.log("k_norm", float(np.linalg.norm(w)))'))
    return type("P", (), {"project": project, "layout": locate(project), "mark": mark})


def catalog(p):
    cat = open_catalog(p.layout)
    cat.open()
    cat.ingest()
    return cat


def test_runs_record_their_peak_memory_and_gpus(proj):
    cat = catalog(proj)
    try:
        rows = cat.execute("SELECT peak_rss, gpus FROM runs WHERE mode = 'record'").fetchall()
    finally:
        cat.close()
    assert len(rows) == 3
    assert all(rss is not None and 10e6 < rss < 8 * GIB for rss, _ in rows)  # numpy + pyarrow: tens of MB
    assert {g for _, g in rows} == {0}


def test_plan_fits_the_runs_threads_onto_the_cores_and_says_so(proj):
    cat = catalog(proj)
    try:
        one = plan_replay(cat, ["w_norm"], workers=4, capacity=Resources(2))
        cat.execute("UPDATE runs SET threads = 2 WHERE script = 'sgd.py'")  # as a torch run with 2 threads
        two = plan_replay(cat, ["w_norm"], workers=2, capacity=Resources(2))
        four = plan_replay(cat, ["w_norm"], workers=2, capacity=Resources(4))
        cat.execute("UPDATE runs SET threads = NULL WHERE script = 'sgd.py'")
    finally:
        cat.close()
    assert one.workers == 2 and one.schedule.reason == "1-thread runs on 2 cores: 2 workers"
    assert {t.memory for t in one.tasks} and all(t.memory and t.memory > 10e6 for t in one.tasks)
    assert two.workers == 1 and {t.threads for t in two.tasks} == {2}
    text = render_plan(two)
    assert "schedule: 1 worker x 2 threads (2-thread runs on 2 cores: 1 worker)" in text
    assert f"total about {two.estimate:.1f} s" in text
    assert two.estimate == pytest.approx(sum(t.estimate for t in two.tasks))  # one after the other
    assert four.workers == 2


def test_two_thread_runs_never_share_the_cores(proj, monkeypatch):
    """On 2 cores, 2-thread tasks run one at a time even with --workers 2."""
    monkeypatch.setattr(local_mod, "machine", lambda: Resources(2))
    cat = catalog(proj)
    cat.execute("UPDATE runs SET threads = 2 WHERE script = 'sgd.py'")
    cat.close()
    try:
        rep = replay(["w_norm"], workers=2, yes=True, layout=proj.layout, progress=False)
    finally:
        cat.open()
        cat.execute("UPDATE runs SET threads = NULL WHERE script = 'sgd.py'")
        cat.close()
    assert not rep.failed and rep.plan.workers == 1 and len(rep.results) == 2
    cat = catalog(proj)
    try:
        spans = cat.execute("SELECT started, ended FROM replay_workers WHERE replay_id IN"
                            " (SELECT unnest(?)) ORDER BY started", [[r.replay_id for r in rep.plan.runs]]).fetchall()
        n = cat.execute("SELECT count(*) FROM records WHERE name = 'w_norm'").fetchone()[0]
    finally:
        cat.close()
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]  # the second started after the first ended
    assert n == 8  # 2 runs x 4 epochs


def test_a_killed_worker_is_retried_and_nothing_is_duplicated(proj):
    if os.path.exists(proj.mark):
        os.remove(proj.mark)
    rep = replay(["k_norm"], workers=1, yes=True, layout=proj.layout, progress=False)
    assert os.path.exists(proj.mark)  # the first attempt was killed
    assert not rep.failed and [r.attempts for r in rep.results] == [2]
    cat = catalog(proj)
    try:
        rows = cat.execute("SELECT coord, count(*) FROM records WHERE name = 'k_norm' GROUP BY ALL").fetchall()
        attempts = cat.execute("SELECT attempts FROM replays WHERE names = ['k_norm']").fetchall()
    finally:
        cat.close()
    assert sorted(c[0] for c, _ in rows) == [0, 1, 2, 3] and {n for _, n in rows} == {1}
    assert attempts == [(2,)]


def test_the_cost_model_is_calibrated_by_past_replays(proj):
    """After a replay, its measured task time against the model's becomes the next plan's factor."""
    rep = replay(["w_norm"], workers=2, yes=True, layout=proj.layout, progress=False)
    assert not rep.failed
    cat = catalog(proj)
    try:
        work, model, executor = cat.execute(
            "SELECT sum(work), sum(model), any_value(executor) FROM replays WHERE replay_id IN (SELECT unnest(?))",
            [[r.replay_id for r in rep.plan.runs]]).fetchone()
        plan = plan_replay(cat, ["w_norm"], workers=2, capacity=Resources(2))
    finally:
        cat.close()
    assert executor == "local" and work > 0 and model > 0
    cal = plan.calibration
    assert cal.replays >= 1 and cal.start is not None and 0.05 < cal.start < 10
    assert all(t.estimate == pytest.approx(t.model * cal.factor) for t in plan.tasks)
    assert "calibrated on" in render_plan(plan)


# -- claims --------------------------------------------------------------------------------------------


def test_a_claim_is_exclusive_remembers_its_finish_and_expires_with_its_claimant(tmp_path):
    layout = locate(tmp_path)
    a, b = Claims(layout), Claims(layout)
    t0 = time.time()
    assert a.acquire("run1", ["x", "y"], since=t0)[0] == OK
    state, holder = b.acquire("run1", ["y"], since=t0)
    assert state == BUSY and holder["pid"] == os.getpid()
    assert b.acquire("run2", ["y"], since=t0)[0] == OK  # other runs are free
    a.finish("run1", ["x", "y"], "rep-1")
    state, last = b.acquire("run1", ["x"], since=t0)
    assert state == DONE and last["replay_id"] == "rep-1"  # planned before it finished: use its values
    assert b.acquire("run1", ["x"], since=time.time())[0] == OK
    b.release()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from flordb.store.claims import Claims;"
         "from flordb.store.layout import locate; c = Claims(locate(sys.argv[1]));"
         "print(c.acquire('run3', ['x'], since=0)[0], flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env=base_env())
    assert holder.stdout.readline().strip() == OK
    assert a.acquire("run3", ["x"], since=0)[0] == BUSY
    assert not a.wait("run3", ["x"], timeout=0.2)
    holder.kill()  # the claimant crashes
    holder.wait()
    assert a.wait("run3", ["x"], timeout=5)
    assert a.acquire("run3", ["x"], since=0)[0] == OK
    a.release()


def test_two_concurrent_queries_produce_each_value_once(tmp_path):
    project = setup_project(tmp_path / "proj", {"sgd.py": NUMPY_SGD})
    run_parallel([(project, project / "sgd.py", kwargs(["lr=0.05"]), None),
                  (project, project / "sgd.py", kwargs(["lr=0.02", "seed=1"]), None)])
    (project / "sgd.py").write_text(with_statements(NUMPY_SGD, post=NORM))
    flordb = str(Path(sys.executable).with_name("flordb"))
    sql = "SELECT lr, epoch, w_norm FROM logs ORDER BY lr, epoch"
    procs = [subprocess.Popen([flordb, "query", sql, "--yes", "--format", "csv"], cwd=project,
                              env=base_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] and len(outs[0][0].strip().splitlines()) == 1 + 8
    assert "" not in [line.split(",")[-1] for line in outs[0][0].strip().splitlines()]
    with open_catalog(locate(project)) as cat:
        cat.ingest()
        dup = cat.execute("SELECT count(*), count(DISTINCT (run_id, coord)) FROM records WHERE name = 'w_norm'"
                          ).fetchone()
        replays = cat.execute("SELECT run_id, count(*) FROM replays WHERE names = ['w_norm'] GROUP BY 1").fetchall()
    assert dup == (8, 8)
    assert len(replays) == 2 and {n for _, n in replays} == {1}  # each run replayed once
