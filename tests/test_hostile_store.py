"""Issue 11, failures 2 and 7: one damaged file never blocks a query; liveness by heartbeat.

Each kind of damage is planted next to a healthy run: queries and ``flordb
runs`` still answer, every healthy record is there, the damaged file is moved
to ``.flordb/quarantine/`` and named in a one-line warning, ``flordb doctor``
reports it and ``flordb doctor --rebuild`` rebuilds a broken catalog.
"""

from __future__ import annotations

import json
import os
import socket
import time

import duckdb
import pytest
from click.testing import CliRunner

from conftest import q, record
from flordb.errors import StoreError
from flordb.record.context import Blocks
from flordb.store.catalog import open_catalog
from flordb.store.layout import locate
from flordb.store.segments import SegmentWriter, write_json_atomic


def fake_run(layout, run_id, epochs=2, ended=True, host="elsewhere", pid=0):
    d = layout.run_dir(run_id)
    d.mkdir(parents=True)
    write_json_atomic(d / "run.json", {"run_id": run_id, "script": "t.py", "started": time.time(), "pid": pid,
                                       "host": host, "version": None})
    w = SegmentWriter(d)
    blocks = Blocks()
    epoch = blocks.open(("epoch",), ())
    for e in range(epochs):
        w.write([("loss", float(e), epoch + e)], [], [{"kind": "iter", "path": ("epoch",), "coord": (e,),
                                                      "t0": 0.0, "t1": 1.0}], blocks.table)
    if ended:
        write_json_atomic(d / "end.json", {"status": "finished", "ended": time.time(), "error": None})
    return d


def _random(n):
    return os.urandom(n)


def _wrong_schema(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2]}), path)


DAMAGE = {
    "truncated segment": ("seg-000002.parquet", lambda p: p.write_bytes(p.read_bytes()[:60])),
    "zero-length segment": ("seg-000002.parquet", lambda p: p.write_bytes(b"")),
    "random segment": ("seg-000002.parquet", lambda p: p.write_bytes(_random(3000))),
    "segment of another schema": ("seg-000002.parquet", _wrong_schema),
    "segment with a scribbled footer": ("seg-000002.parquet",
                                        lambda p: p.write_bytes(p.read_bytes()[:-72] + b"\xff" * 64
                                                                + p.read_bytes()[-8:])),
    "run.json {}": ("run.json", lambda p: p.write_text("{}")),
    "run.json not JSON": ("run.json", lambda p: p.write_text('{"run_id": ')),
    "run.json a list": ("run.json", lambda p: p.write_text("[1]")),
    "run.json of another run": ("run.json", lambda p: p.write_text('{"run_id": "other"}')),
    "run.json started is text": ("run.json", lambda p: p.write_text('{"run_id": "bad", "started": "noon"}')),
    "run.json binary": ("run.json", lambda p: p.write_bytes(_random(200))),
    "end.json [1]": ("end.json", lambda p: p.write_text("[1]")),
    "end.json not JSON": ("end.json", lambda p: p.write_text("{")),
    "end.json ended is text": ("end.json", lambda p: p.write_text('{"status": "finished", "ended": "later"}')),
    "end.json status is a number": ("end.json", lambda p: p.write_text('{"status": 3}')),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_file_is_quarantined_and_everything_else_answers(project, kind, capsys, monkeypatch):
    monkeypatch.chdir(project)
    layout = locate(project)
    fake_run(layout, "good", epochs=3)
    bad_dir = fake_run(layout, "bad", epochs=3)
    name, damage = DAMAGE[kind]
    damage(bad_dir / name)
    capsys.readouterr()

    df = q(project, "SELECT run_id, epoch, loss FROM logs ORDER BY run_id, epoch")
    good = df[df["run_id"] == "good"]
    assert good["loss"].tolist() == [0.0, 1.0, 2.0]
    bad = df[df["run_id"] == "bad"]
    if name.startswith("seg-"):
        assert bad["loss"].tolist() == [0.0, 2.0]  # only the damaged segment is missing
    elif name == "end.json":
        assert bad["loss"].tolist() == [0.0, 1.0, 2.0]
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "damaged file" in line]
    assert len(warnings) == 1 and f"segments/bad/{name}" in warnings[0], err
    assert (layout.home / "quarantine" / "bad" / name).exists() and not (bad_dir / name).exists()

    from flordb.cli.main import cli

    result = CliRunner().invoke(cli, ["runs"])
    assert result.exit_code == 0 and "good" in result.stdout
    assert "1 damaged store files were quarantined" in result.stderr
    result = CliRunner().invoke(cli, ["doctor"])
    assert f"quarantined: quarantine/bad/{name}" in result.stdout
    if name == "run.json":
        assert "segments/bad has segments but no run.json" in result.stdout
    assert q(project, "SELECT count(*) AS n FROM quarantine")["n"][0] == 1


def test_damaged_data_pages_behind_a_good_footer_are_found_by_loading_each_file(project, capsys, monkeypatch):
    """The footer check passes; the batch load fails; each file is then loaded alone."""
    monkeypatch.chdir(project)
    layout = locate(project)
    fake_run(layout, "good", epochs=2)
    bad_dir = fake_run(layout, "bad", epochs=2)
    seg = bad_dir / "seg-000001.parquet"
    data = bytearray(seg.read_bytes())
    for i in range(4, min(len(data) - 200, 300)):  # scribble over the data pages, keep the footer
        data[i] = 0xFF
    seg.write_bytes(bytes(data))
    df = q(project, "SELECT run_id, loss FROM logs ORDER BY run_id, loss")
    assert df[df["run_id"] == "good"]["loss"].tolist() == [0.0, 1.0]
    assert "seg-000001.parquet" in capsys.readouterr().err


def test_a_corrupt_catalog_is_named_as_such_at_once_and_rebuilt_by_doctor(project, monkeypatch):
    from flordb.cli.main import cli

    monkeypatch.chdir(project)
    layout = locate(project)
    fake_run(layout, "r1", epochs=3)
    assert len(q(project, "SELECT loss FROM logs")) == 3
    layout.catalog.write_bytes(b"\x00" * 8192 + b"not a block" * 100)
    t0 = time.monotonic()
    with pytest.raises(StoreError) as err:
        q(project, "SELECT loss FROM logs")
    assert time.monotonic() - t0 < 10 and "lock" not in str(err.value)
    assert "flordb doctor --rebuild" in str(err.value)
    result = CliRunner().invoke(cli, ["runs"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 1 and "problem: catalog" in result.stdout
    result = CliRunner().invoke(cli, ["doctor", "--rebuild"])
    assert result.exit_code == 0, result.output
    assert "1 runs, 3 records" in result.stdout
    assert q(project, "SELECT loss FROM logs ORDER BY loss")["loss"].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("home", ["file", "unwritable"])
def test_an_unusable_store_is_one_line(project, monkeypatch, tmp_path, home):
    from flordb.cli.main import cli

    if home == "file":
        path = tmp_path / "afile"
        path.write_text("x")
        path = path / "store"
    else:
        if os.geteuid() == 0:
            path = "/proc/flordb-store"  # not even root can make a directory here
        else:
            path = tmp_path / "ro"
            path.mkdir(mode=0o500)
            path = path / "store"
    monkeypatch.chdir(project)
    monkeypatch.setenv("FLORDB_HOME", str(path))
    for args in (["runs"], ["query", "SELECT 1"], ["doctor"]):
        result = CliRunner().invoke(cli, args)
        assert "Traceback" not in result.output and not isinstance(result.exception, Exception) \
            or isinstance(result.exception, SystemExit), result.output
        if result.exit_code != 0:  # nothing to show is fine; a failure is one line
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    proc = record(project, "import flordb as flor\nfor e in flor.loop('epoch', range(2)):\n    flor.log('x', e)\n",
                  env={"FLORDB_HOME": str(path)})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr  # training goes on
    assert "recording is off" in proc.stderr


def test_a_full_disk_during_ingest_is_one_line(project, monkeypatch):
    from flordb.cli.main import cli
    from flordb.store.catalog import Catalog

    monkeypatch.chdir(project)
    fake_run(locate(project), "r1")
    real = Catalog.execute

    def full(self, sql, params=None):
        if sql.startswith("INSERT INTO record_rows"):  # the statement that stores log records
            raise duckdb.IOException("IO Error: Could not write file: No space left on device")
        return real(self, sql, params)

    monkeypatch.setattr(Catalog, "execute", full)
    result = CliRunner().invoke(cli, ["query", "SELECT loss FROM logs"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: could not ingest new records: IO Error: Could not write file: No space left on device;"
        " run `flordb doctor`"]
    monkeypatch.setattr(Catalog, "execute", real)
    assert q(project, "SELECT loss FROM logs ORDER BY loss")["loss"].tolist() == [0.0, 1.0]  # nothing lost


# -- failure 7: liveness by heartbeat ----------------------------------------------------------------------


@pytest.mark.parametrize("age, expected", [(5, "running"), (600, "interrupted")])
def test_a_run_on_another_host_is_judged_by_its_heartbeat(project, age, expected):
    layout = locate(project)
    d = fake_run(layout, "r1", ended=False, host="another-host", pid=12345)
    beat = d / "heartbeat"
    beat.touch()
    old = time.time() - age
    for p in d.iterdir():
        os.utime(p, (old, old))
    assert q(project, "SELECT status FROM runs")["status"].tolist() == [expected]


def test_a_dead_pid_on_this_host_is_interrupted_at_once(project):
    layout = locate(project)
    proc = __import__("subprocess").run(["true"])
    d = fake_run(layout, "r1", ended=False, host=socket.gethostname(), pid=2**22 + 7)
    (d / "heartbeat").touch()
    assert proc.returncode == 0
    assert q(project, "SELECT status FROM runs")["status"].tolist() == ["interrupted"]


def test_a_running_script_refreshes_its_heartbeat(project):
    from conftest import spawn

    script = """
import time, flordb as flor
for epoch in flor.loop("epoch", range(2)):
    flor.log("x", 1.0)
    time.sleep(0.6)
"""
    proc = spawn(project, script, env={"FLORDB_HEARTBEAT_INTERVAL": "0.1"})
    layout = locate(project)
    deadline = time.time() + 30
    beats = []
    while proc.poll() is None and time.time() < deadline:
        for d in layout.segments.glob("*"):
            try:
                beats.append((d / "heartbeat").stat().st_mtime)
            except OSError:
                pass
        time.sleep(0.1)
    proc.communicate()
    assert proc.returncode == 0
    assert len(set(beats)) >= 3  # refreshed while alive, not written once
    assert q(project, "SELECT status FROM runs")["status"].tolist() == ["finished"]
