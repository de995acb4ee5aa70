"""Concurrent runs and queries: nobody fails on the catalog lock (DESIGN decision 1)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT, base_env, q, record, spawn, write_script
from flordb.errors import CatalogBusyError
from flordb.store.layout import locate

WRITER = """
import sys, time
import flordb as flor
tag = flor.arg("tag", "a")
for epoch in flor.loop("epoch", range(8)):
    for step in flor.loop("step", range(25)):
        flor.log("loss", epoch * 100 + step)
    flor.log("acc", epoch)
    time.sleep(0.25)
print("writer done", tag)
"""

QUERIER = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
from flordb.api import query
from flordb.store.layout import locate
layout = locate({project!r})
stop = {stop!r}
n, errors, seen = 0, [], []
while not os.path.exists(stop) or n == 0:
    try:
        df = query("SELECT count(loss) AS n FROM logs", replay="no", layout=layout)
        seen.append(int(df["n"].sum()) if len(df) else 0)
        n += 1
    except Exception as exc:
        errors.append(f"{{type(exc).__name__}}: {{exc}}")
    if n == 1:
        open({ready!r}, "w").close()
print(json.dumps({{"queries": n, "errors": errors, "seen": seen}}))
"""


def test_two_runs_and_a_querier_at_once(project, tmp_path):
    write_script(project, WRITER)
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    # a project with one run already, so that the querier's queries have something to read
    seed = write_script(project, "import flordb as flor\nfor e in flor.loop('epoch', range(2)):\n"
                                 "    flor.log('loss', 0)\n", name="seed.py")
    record(project, seed, check=True)
    loop = write_script(project, QUERIER.format(repo=str(REPO_ROOT), project=str(project), stop=str(stop),
                                                ready=str(ready)), name="query_loop.py")
    querier = spawn(project, loop)
    deadline = time.time() + 60
    while not ready.exists():
        assert querier.poll() is None, querier.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    writers = [spawn(project, "train.py", "--kwargs", f"tag={t}") for t in ("a", "b")]
    try:
        outs = [w.communicate(timeout=60) for w in writers]
    finally:
        stop.touch()
        for w in writers:
            w.kill() if w.poll() is None else None
    qout, qerr = querier.communicate(timeout=120)
    for w, (out, err) in zip(writers, outs):
        assert w.returncode == 0, err
        assert "writer done" in out
        assert "lock" not in err.lower() and "Error" not in err, err
    assert querier.returncode == 0, qerr
    stats = json.loads(qout.strip().splitlines()[-1])
    assert stats["errors"] == [], stats["errors"]
    # the queries really overlapped the runs: some saw part of their records
    assert any(2 < n < 402 for n in stats["seen"]), stats["seen"]
    df = q(project, "SELECT tag, count(loss) AS n, count(DISTINCT epoch) AS e, sum(loss) AS s FROM logs"
                    " WHERE tag IS NOT NULL GROUP BY tag ORDER BY tag")
    expected_sum = sum(e * 100 + s for e in range(8) for s in range(25))
    assert df.values.tolist() == [["a", 200, 8, expected_sum], ["b", 200, 8, expected_sum]]
    acc = q(project, "SELECT tag, count(DISTINCT acc) AS n FROM logs WHERE tag IS NOT NULL GROUP BY tag ORDER BY tag")
    assert acc["n"].tolist() == [8, 8]
    assert set(q(project, "SELECT status FROM runs")["status"]) == {"finished"}


HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS holder_probe (x INT)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _hold(project, seconds: float) -> subprocess.Popen:
    """Another process holding the catalog's write lock for ``seconds``."""
    from flordb.store.catalog import open_catalog

    with open_catalog(locate(project)):  # create the catalog first (a query never creates a store)
        pass
    path = write_script(project, HOLDER, name="holder.py")
    proc = subprocess.Popen([sys.executable, str(path), str(locate(project).catalog), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base_env(project))
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_query_waits_for_a_held_catalog(project):
    record(project, "import flordb as flor\nfor e in flor.loop('epoch', range(3)):\n    flor.log('x', e)\n",
           check=True)
    holder = _hold(project, 1.5)
    try:
        t0 = time.monotonic()
        df = q(project, "SELECT sum(x) AS s FROM logs")
        waited = time.monotonic() - t0
    finally:
        holder.communicate(timeout=30)
    assert df["s"][0] == 3
    assert waited > 0.5  # it really waited for the holder instead of failing


def test_training_ignores_a_held_catalog(project):
    holder = _hold(project, 5)
    try:
        t0 = time.monotonic()
        p = record(project, "import flordb as flor\nfor e in flor.loop('epoch', range(3)):\n    flor.log('x', e)\n")
        took = time.monotonic() - t0
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    assert p.returncode == 0, p.stderr
    assert took < 4.5  # never blocked on the catalog lock
    assert [line for line in p.stderr.splitlines() if " finished; query it: " not in line] == []
    assert q(project, "SELECT sum(x) AS s FROM logs")["s"][0] == 3


def test_busy_catalog_gives_a_clear_error_after_the_timeout(project, monkeypatch):
    holder = _hold(project, 4)
    monkeypatch.setenv("FLORDB_LOCK_TIMEOUT", "0.3")
    try:
        with pytest.raises(CatalogBusyError) as info:
            q(project, "SELECT 1")
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    assert "FLORDB_LOCK_TIMEOUT" in str(info.value)
