"""The Ray executor on a local two-node cluster (issue 10, DESIGN decision 7).

One cluster for the module (``ray.cluster_utils.Cluster``: a head and a
second node, one CPU each, each with its own temporary directory). Tasks are
self-contained: a ``sitecustomize`` audit hook, active only in replay worker
processes, records every file or directory they open under the project
directory; the list must stay empty.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from conftest import base_env

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "replay"))
from replay_scripts import NUMPY_SGD, run_parallel, with_statements  # noqa: E402
from test_replay import kwargs, setup_project  # noqa: E402
from test_scheduler import KILL  # noqa: E402

from flordb.hindsight.api import replay  # noqa: E402
from flordb.api import query  # noqa: E402
from flordb.store.catalog import open_catalog  # noqa: E402
from flordb.store.layout import locate  # noqa: E402

AUDIT = '''\
import os, sys
_forbid, _log = os.environ.get("FLORDB_TEST_FORBID"), os.environ.get("FLORDB_TEST_FORBID_LOG")
if _forbid and _log and os.environ.get("FLORDB_REPLAY_TASK"):
    def _hook(event, args):
        if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path == _forbid or path.startswith(_forbid + os.sep):
                with open(_log, "a") as fh:
                    fh.write(event + " " + path + "\\n")
    sys.addaudithook(_hook)
'''
# Version 2 of the script: a different decay after the step loop.
V2 = NUMPY_SGD.replace("w *= 0.99", "w *= 0.98")
NORM = 'flor.log("w_norm", float(np.linalg.norm(w)))'
SQL = "SELECT version, lr, epoch, w_norm FROM logs ORDER BY ALL"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    project_dir = root / "proj"
    hooks = root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT)
    forbid_log = root / "forbidden.log"
    saved = dict(os.environ)
    os.environ.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])),
        "FLORDB_TEST_FORBID": str(project_dir), "FLORDB_TEST_FORBID_LOG": str(forbid_log),
    })
    nodes = [root / "node1", root / "node2"]
    for d in nodes:
        d.mkdir()
    common = {"num_cpus": 1, "object_store_memory": 80 << 20}
    try:
        c = Cluster(initialize_head=True, head_node_args={**common, "include_dashboard": False,
                                                          "env_vars": {"TMPDIR": str(nodes[0])}})
        c.add_node(**common, env_vars={"TMPDIR": str(nodes[1])})
        c.wait_for_nodes()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    mark = str(root / "killed-once")
    killer = "import os\n" + with_statements(NUMPY_SGD, pre=KILL.format(mark=mark))
    project = setup_project(project_dir, {"sgd.py": NUMPY_SGD, "kill.py": killer})
    run_parallel([(project, project / "sgd.py", kwargs(["lr=0.05"]), None),
                  (project, project / "kill.py", kwargs(["lr=0.03"]), None)])
    (project / "sgd.py").write_text(V2)
    run_parallel([(project, project / "sgd.py", kwargs(["lr=0.02", "seed=1"]), None)])
    (project / "sgd.py").write_text(with_statements(V2, post=NORM))
    (project / "kill.py").write_text(with_statements(killer, post='flor.log("k_norm", float(np.linalg.norm(w)))'))
    yield type("C", (), {"address": c.address, "project": project, "layout": locate(project), "mark": mark,
                         "forbidden": forbid_log, "nodes": nodes, "hooks": hooks})
    ray.shutdown()
    c.shutdown()


def values(layout, sql=SQL):
    df = query(sql, replay="no", layout=layout)
    return [tuple(r) for r in df.itertuples(index=False, name=None)]


def replays_of(layout, name):
    with open_catalog(layout) as cat:
        cat.ingest()
        return cat.execute("SELECT run_id, executor, status, attempts FROM replays WHERE names = [?]"
                           " ORDER BY started", [name]).fetchall()


def test_ray_and_local_give_identical_values_for_a_multiversion_query(cluster, monkeypatch):
    monkeypatch.setenv("FLORDB_EXECUTOR", "ray")
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    on_ray = query(SQL, replay="yes", layout=cluster.layout)
    on_ray = [tuple(r) for r in on_ray.itertuples(index=False, name=None)]
    assert len(on_ray) == 8 and len({r[0] for r in on_ray}) == 2  # two versions, two runs x 4 epochs
    assert all(r[-1] is not None for r in on_ray)
    assert [(e, s) for _, e, s, _ in replays_of(cluster.layout, "w_norm")] == [("ray", "ok")] * 2
    monkeypatch.delenv("FLORDB_EXECUTOR")
    # The control: local workers run in the project's store, and the audit hook sees it.
    control = cluster.forbidden.with_name("control.log")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(cluster.hooks), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FLORDB_TEST_FORBID", str(cluster.project))
    monkeypatch.setenv("FLORDB_TEST_FORBID_LOG", str(control))
    rep = replay(["w_norm"], yes=True, layout=cluster.layout, progress=False, executor="local")
    assert not rep.failed and not rep.diverged
    assert control.exists() and str(cluster.project) in control.read_text()
    assert values(cluster.layout) == on_ray  # bit for bit
    logs = [p.read_text() for p in (cluster.layout.replays).glob("*/*.log") if "[ray node" in p.read_text()]
    used = {m.group(1) for text in logs for m in re.finditer(r"in (\S+)\]", text)}
    assert used and all(any(u.startswith(str(n)) for n in cluster.nodes) for u in used)
    assert len({text.split(",")[0] for text in logs}) == 2  # both nodes ran tasks
    assert not cluster.forbidden.exists(), cluster.forbidden.read_text()  # never read the project directory


def test_a_killed_worker_is_retried_on_ray(cluster):
    if os.path.exists(cluster.mark):
        os.remove(cluster.mark)
    rep = replay(["k_norm"], yes=True, layout=cluster.layout, progress=False, executor="ray",
                 address=cluster.address)
    assert os.path.exists(cluster.mark)  # the first attempt was killed
    assert not rep.failed and [r.attempts for r in rep.results] == [2]
    got = values(cluster.layout, "SELECT epoch, k_norm FROM logs WHERE k_norm IS NOT NULL ORDER BY epoch")
    assert [e for e, _ in got] == [0, 1, 2, 3]
    assert [(e, a) for _, e, _, a in replays_of(cluster.layout, "k_norm")] == [("ray", 2)]
    assert not cluster.forbidden.exists(), cluster.forbidden.read_text()


def test_two_concurrent_queries_on_ray_produce_each_value_once(cluster):
    (cluster.project / "sgd.py").write_text(with_statements(V2, post='flor.log("w_max", float(np.abs(w).max()))'))
    flordb = str(Path(sys.executable).with_name("flordb"))
    sql = "SELECT lr, epoch, w_max FROM logs ORDER BY lr, epoch"
    cmd = [flordb, "query", sql, "--yes", "--format", "csv", "--executor", "ray", "--address", cluster.address]
    procs = [subprocess.Popen(cmd, cwd=cluster.project, env=base_env(cluster.project), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] and len(outs[0][0].strip().splitlines()) == 1 + 8
    with open_catalog(cluster.layout) as cat:
        cat.ingest()
        dup = cat.execute("SELECT count(*), count(DISTINCT (run_id, coord)) FROM records WHERE name = 'w_max'"
                          ).fetchone()
    assert dup == (8, 8)
    assert sorted(e for _, e, _, _ in replays_of(cluster.layout, "w_max")) == ["ray", "ray"]  # once per run


def test_unknown_executor_is_a_one_line_error(cluster):
    proc = subprocess.run([str(Path(sys.executable).with_name("flordb")), "replay", "w_norm", "--yes",
                           "--executor", "spark"], cwd=cluster.project, env=base_env(cluster.project),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "spark" in proc.stderr and "Traceback" not in proc.stderr
    env = base_env(cluster.project, {"FLORDB_EXECUTOR": "spark"})
    proc = subprocess.run([str(Path(sys.executable).with_name("flordb")), "replay", "w_norm", "--yes"],
                          cwd=cluster.project, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "unknown executor 'spark'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
