"""Readers never block ingest, and warm queries reuse what did not change (issue 12, items 3 and 6)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import base_env, q, record, write_script
from flordb.store.layout import locate

TRAIN = """
import flordb as flor
tag = flor.arg("tag", "a")
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(4)):
        flor.log("loss", epoch * 10 + step)
    flor.log("acc", epoch)
"""

# A plain DuckDB client that keeps the catalog open read-only until told to stop,
# reading it before and after: its snapshot stays readable while flordb ingests.
DUCKDB_READER = """
import os, sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print("runs", con.execute("SELECT count(*) FROM runs").fetchone()[0], flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
print("runs", con.execute("SELECT count(*) FROM runs").fetchone()[0], flush=True)
"""

# Another flordb process that answered a query and keeps its read-only connection for the next.
FLORDB_READER = """
import os, sys
import flordb as flor
print("runs", len(flor.query("SELECT * FROM runs", replay="no")), flush=True)
sys.stdin.readline()
print("runs", len(flor.query("SELECT * FROM runs", replay="no")), flush=True)
"""


def _runs(project) -> int:
    return int(q(project, "SELECT count(*) AS n FROM runs")["n"][0])


def test_a_duckdb_client_reading_the_catalog_blocks_no_flordb_command(project, tmp_path):
    record(project, TRAIN, check=True)
    assert _runs(project) == 1
    stop = tmp_path / "stop"
    reader = write_script(project, DUCKDB_READER, name="reader.py")
    proc = subprocess.Popen([sys.executable, str(reader), str(locate(project).catalog), str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base_env(project))
    try:
        assert proc.stdout.readline().split() == ["runs", "1"]
        record(project, TRAIN, "--kwargs", "tag=b", check=True)
        t0 = time.monotonic()
        df = q(project, "SELECT tag, count(loss) AS n FROM logs GROUP BY tag ORDER BY tag")
        took = time.monotonic() - t0
        assert proc.poll() is None  # the reader still holds the catalog: nobody waited for it to go
        assert df.values.tolist() == [["a", 12], ["b", 12]]
        assert took < 10
        cli = subprocess.run([str(_flordb_exe()), "query", "-f", "csv", "SELECT count(*) AS n FROM runs"],
                             cwd=project, capture_output=True, text=True, env=base_env(project), timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.split() == ["n", "2"]
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.split() == ["runs", "1"]  # still its own snapshot, unharmed by the swap
    # the swap left nothing behind, and the catalog is an ordinary DuckDB file with both runs
    home = locate(project).home
    assert not list(home.glob("flor.duckdb.swap-*")) and not (home / "flor.duckdb.wal").exists()
    import duckdb

    from flordb.store.catalog import close_readers

    close_readers()
    con = duckdb.connect(str(locate(project).catalog), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    finally:
        con.close()


def _flordb_exe() -> Path:
    exe = Path(sys.executable).with_name("flordb")
    if not exe.exists():
        pytest.skip("the flordb command is not installed next to this interpreter")
    return exe


def test_another_flordb_keeping_its_reader_open_blocks_no_ingest(project):
    record(project, TRAIN, check=True)
    script = write_script(project, FLORDB_READER, name="flor_reader.py")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=project, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base_env(project))
    try:
        assert proc.stdout.readline().split() == ["runs", "1"]
        record(project, TRAIN, "--kwargs", "tag=b", check=True)
        assert _runs(project) == 2  # ingested although the other process holds its reader open
        proc.stdin.write("\n")
        proc.stdin.flush()
        # its next query sees the swapped-in catalog (and does not ingest again: nothing is new)
        assert proc.stdout.readline().split() == ["runs", "2"]
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_warm_queries_reuse_the_reader_and_still_see_new_runs(project, monkeypatch):
    from flordb.store import catalog

    record(project, TRAIN, check=True)
    q(project, "SELECT loss FROM logs")
    opened, ingests = [], []
    real_connect, real_ingest = catalog.connect_reader, catalog.Catalog.ingest
    monkeypatch.setattr(catalog, "connect_reader", lambda *a, **k: opened.append(1) or real_connect(*a, **k))
    monkeypatch.setattr(catalog.Catalog, "ingest", lambda self: ingests.append(1) or real_ingest(self))
    for _ in range(3):
        assert len(q(project, "SELECT epoch, step, loss FROM logs")) == 12
    assert (opened, ingests) == ([], [])  # nothing changed: no ingest, no new connection
    record(project, TRAIN, "--kwargs", "tag=b", check=True)
    assert len(q(project, "SELECT epoch, step, loss FROM logs")) == 24
    assert ingests and len(opened) == 1  # ingested (and looked once more after folding the run's segments)
    del ingests[:], opened[:]
    assert len(q(project, "SELECT epoch, step, loss FROM logs WHERE tag = 'b'")) == 12
    assert (opened, ingests) == ([], [])  # settled again
    # a write in this process (a tag) is seen by the next query too
    from flordb.store.catalog import open_catalog

    run_id = q(project, "SELECT run_id FROM runs ORDER BY started LIMIT 1")["run_id"][0]
    with open_catalog(locate(project)) as cat:
        cat.add_label(run_id, "tag", "best")
    assert q(project, "SELECT run_id FROM run_labels WHERE value = 'best'")["run_id"].tolist() == [run_id]


def test_the_reader_still_cannot_write_after_reuse(project):
    from flordb.errors import QueryError

    record(project, TRAIN, check=True)
    for _ in range(2):
        assert len(q(project, "SELECT loss FROM logs")) == 12
    with pytest.raises(QueryError):
        q(project, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryError):
        q(project, "COPY (SELECT 1) TO 'x.csv'")
    assert len(q(project, "SELECT loss FROM logs")) == 12
    assert not (project / "x.csv").exists()


def test_a_shell_reads_without_writing_and_lets_go_while_the_prompt_waits(project, monkeypatch):
    from flordb.cli.shell import Shell, execute
    from flordb.store import catalog

    record(project, TRAIN, check=True)
    monkeypatch.chdir(project)
    sh = Shell(interactive=True)
    assert len(execute(sh.state, "SELECT loss FROM logs").df.rows) == 12
    sh.refresh()
    sh.wait_for_refresh(timeout=30)
    opened, attached = [], []
    real_connect, real_attach = catalog.connect_reader, catalog._attach
    monkeypatch.setattr(catalog, "connect_reader", lambda *a, **k: opened.append(1) or real_connect(*a, **k))
    monkeypatch.setattr(catalog, "_attach", lambda *a, **k: attached.append(1) or real_attach(*a, **k))
    for _ in range(2):
        assert len(execute(sh.state, "SELECT epoch, loss FROM logs").df.rows) == 12
        sh.refresh()
        sh.wait_for_refresh(timeout=30)
        assert "loss" in sh.completer.vocab.tables["logs"]
        # the prompt waits: a plain DuckDB client may even open the catalog for writing
        probe = f"import duckdb; duckdb.connect({str(locate(project).catalog)!r}).close()"
        subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
    assert attached == []  # nothing new: neither a statement nor a refresh attached the writer
    assert len(opened) == 2  # one read-only connection per statement, released after it


def test_an_interrupted_run_does_not_make_every_query_ingest(project, monkeypatch):
    from flordb.store import catalog

    monkeypatch.setattr(catalog, "UNFINISHED_RECHECK_S", 0.0)  # what a running run would get: no grace
    killed = record(project, "import os, signal\nimport flordb as flor\nfor e in flor.loop('epoch', range(5)):\n"
                             "    flor.log('loss', e)\n    if e == 2:\n        os.kill(os.getpid(), signal.SIGKILL)\n")
    assert killed.returncode != 0
    assert q(project, "SELECT status FROM runs")["status"].tolist() == ["interrupted"]
    ingests = []
    real_ingest = catalog.Catalog.ingest
    monkeypatch.setattr(catalog.Catalog, "ingest", lambda self: ingests.append(1) or real_ingest(self))
    for _ in range(2):
        assert q(project, "SELECT max(epoch) AS e FROM logs")["e"][0] >= 1
    assert ingests == []  # interrupted stays interrupted: nothing to look at again
