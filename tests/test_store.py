"""The store: layout, segment encoding, ingest (idempotent, crash-safe), SIGKILLed runs."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import duckdb
import pytest

from conftest import q, record, spawn
from flordb.store import segments as seg
from flordb.store.catalog import open_catalog
from flordb.store.layout import locate
from flordb.record.context import Blocks
from flordb.store.segments import SegmentWriter, encode, decode, segment_files, write_json_atomic

TABLES = ("runs", "records", "log_names", "args", "loops", "segments", "versions")


def counts(layout) -> dict:
    with duckdb.connect(str(layout.catalog), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


# -- layout --------------------------------------------------------------------------------


def test_locate_git_top_subdir_and_home_override(project, tmp_path, monkeypatch):
    sub = project / "a" / "b"
    sub.mkdir(parents=True)
    assert locate(sub).work_tree == project.resolve()
    assert locate(sub).home == project.resolve() / ".flordb"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert locate(plain).home == plain.resolve() / ".flordb"
    monkeypatch.setenv("FLORDB_HOME", str(tmp_path / "elsewhere"))
    assert locate(sub).home == (tmp_path / "elsewhere").resolve()
    assert locate(sub).catalog == (tmp_path / "elsewhere").resolve() / "flor.duckdb"


def test_flordb_home_env_is_honoured_by_runs(project, tmp_path):
    home = tmp_path / "store"
    record(project, "import flordb as flor\nflor.log('x', 1)\n", env={"FLORDB_HOME": str(home)}, check=True)
    assert not (project / ".flordb" / "segments").exists()
    assert len(list((home / "segments").iterdir())) == 1


# -- encoding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, vtype, back",
    [
        (1.5, seg.FLOAT, 1.5),
        (3, seg.INT, 3),
        (-(2**62), seg.INT, -(2**62)),
        (True, seg.BOOL, True),
        (False, seg.BOOL, False),
        ("s", seg.STR, "s"),
        (None, seg.NULL, None),
        ([1, 2.5, "a"], seg.JSON, [1, 2.5, "a"]),
        ({"k": [1, {"z": None}]}, seg.JSON, {"k": [1, {"z": None}]}),
        ((1, 2), seg.JSON, [1, 2]),
    ],
)
def test_encode_decode_roundtrip(value, vtype, back):
    enc = encode("n", value)
    assert enc[0] == vtype
    assert decode(*enc) == back
    assert type(decode(*enc)) is type(back)


def test_encode_numpy_and_specials(capsys):
    np = pytest.importorskip("numpy")
    assert encode("a", np.float32(0.25))[:2] == (seg.FLOAT, 0.25)
    assert encode("b", np.int64(5))[:2] == (seg.INT, 5.0)
    assert encode("c", np.bool_(True))[:2] == (seg.BOOL, 1.0)
    assert encode("d", np.array(2.5))[:2] == (seg.FLOAT, 2.5)
    assert math.isnan(encode("e", float("nan"))[1])
    assert encode("f", float("-inf"))[1] == float("-inf")
    assert encode("g", 2**80) == (seg.HUGE, float(2**80), str(2**80))  # too big for BIGINT: HUGEINT, exact digits
    assert encode("g", 2**130) == (seg.STR, None, str(2**130))  # too big for HUGEINT: kept exactly as text
    assert encode("h", [np.float64(1.5), np.int32(2)]) == (seg.JSON, None, "[1.5, 2]")
    capsys.readouterr()


def test_repr_fallback_warns_once_per_name_and_survives_broken_repr(capsys):
    class Obj:
        def __repr__(self):
            return "Obj()"

    class Broken:
        def __repr__(self):
            raise RuntimeError("nope")

    seg._warned_repr.discard("o1")
    seg._warned_repr.discard("o2")
    assert encode("o1", Obj()) == (seg.REPR, None, "Obj()")
    assert encode("o1", Obj()) == (seg.REPR, None, "Obj()")
    vt, _, txt = encode("o2", Broken())
    assert vt == seg.REPR and "Broken" in txt
    # a container with an unserialisable member falls back to repr under its own name only
    assert encode("o1", {"a": Obj()}) == (seg.REPR, None, "{'a': Obj()}")
    err = capsys.readouterr().err
    assert err.count("'o1'") == 1 and err.count("'o2'") == 1 and "''" not in err


def test_write_json_atomic_and_segment_files(tmp_path):
    write_json_atomic(tmp_path / "run.json", {"a": 1})
    assert json.loads((tmp_path / "run.json").read_text()) == {"a": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    w = SegmentWriter(tmp_path)
    assert w.write([], [], []) is None
    blocks = Blocks()
    epoch = blocks.open(("epoch",), ())
    p1 = w.write([("x", 1.0, epoch + 0)], [], [], blocks.table)
    p2 = w.write([("x", 2.0, epoch + 1)], [("lr", 0.1)], [], blocks.table)
    (tmp_path / ".seg-000003.tmp").write_bytes(b"half a segment")
    assert segment_files(tmp_path) == [p1, p2]


# -- ingest ----------------------------------------------------------------------------------


def _fake_run(layout, run_id: str, epochs: int, steps: int, ended=True) -> None:
    """A run written through the runtime's own writer, without a process."""
    d = layout.run_dir(run_id)
    d.mkdir(parents=True)
    write_json_atomic(d / "run.json", {"run_id": run_id, "script": "fake.py", "started": time.time(),
                                       "pid": 0, "host": "elsewhere", "version": None})
    w = SegmentWriter(d)
    w.write([], [("lr", 0.1)], [])
    blocks = Blocks()
    epoch = blocks.open(("epoch",), ())
    for e in range(epochs):
        step = blocks.open(("epoch", "step"), (e,))
        logs = [("loss", float(s), step + s) for s in range(steps)]
        logs.append(("acc", e / 10, epoch + e))
        events = [{"kind": "loop", "path": ("epoch", "step"), "coord": (e,), "n": steps, "t0": 0.0, "t1": 1.0},
                  {"kind": "iter", "path": ("epoch",), "coord": (e,), "t0": 0.0, "t1": 1.0, "t2": 1.0}]
        w.write(logs, [], events, blocks.table)
    if ended:
        write_json_atomic(d / "end.json", {"status": "finished", "ended": time.time(), "error": None})


def test_ingest_is_idempotent(project):
    layout = locate(project)
    _fake_run(layout, "r1", epochs=3, steps=4)
    with open_catalog(layout) as cat:
        s1 = cat.ingest()
        s2 = cat.ingest()
    assert (s1.segments, s1.runs) == (4, 1) and s1.rows > 0
    assert s2.segments == 0 and s2.rows == 0
    before = counts(layout)
    assert before["records"] == 3 * 4 + 3
    for _ in range(3):
        df = q(project, "SELECT epoch, step, loss, acc FROM logs")
        assert len(df) == 12
    assert counts(layout) == before


def test_ingest_of_a_growing_run_adds_only_new_segments(project):
    layout = locate(project)
    _fake_run(layout, "r1", epochs=2, steps=2, ended=False)
    assert q(project, "SELECT count(loss) AS n FROM logs")["n"][0] == 4
    w = SegmentWriter(layout.run_dir("r1"))
    w.count = len(segment_files(layout.run_dir("r1")))
    w.seq = 10_000
    blocks = Blocks()
    w.write([("loss", 9.0, blocks.open(("epoch", "step"), (2,)) + 0)], [], [], blocks.table)
    write_json_atomic(layout.run_dir("r1") / "end.json", {"status": "finished", "ended": time.time()})
    assert q(project, "SELECT count(loss) AS n FROM logs")["n"][0] == 5
    assert q(project, "SELECT status FROM runs")["status"].tolist() == ["finished"]
    assert q(project, "SELECT count(loss) AS n FROM logs")["n"][0] == 5


def test_ingest_crash_midway_rolls_back_and_retries(project, monkeypatch):
    from flordb.store.catalog import Catalog

    layout = locate(project)
    _fake_run(layout, "r1", epochs=2, steps=3)
    real = Catalog.execute

    def failing(self, sql, params=None):
        if sql.startswith("INSERT INTO segments"):
            raise duckdb.IOException("disk on fire")
        return real(self, sql, params)

    monkeypatch.setattr(Catalog, "execute", failing)
    from flordb.errors import StoreError

    with pytest.raises(StoreError, match="could not ingest new records: disk on fire"):
        with open_catalog(layout) as cat:
            cat.ingest()
    monkeypatch.setattr(Catalog, "execute", real)
    assert counts(layout)["records"] == 0
    with open_catalog(layout) as cat:
        cat.ingest()
    assert counts(layout)["records"] == 2 * 3 + 2
    assert len(q(project, "SELECT step, loss FROM logs")) == 6


def test_catalog_is_plain_duckdb_with_schema_version(project):
    layout = locate(project)
    with open_catalog(layout) as cat:
        assert cat.schema_version >= 1
    with duckdb.connect(str(layout.catalog), read_only=True) as con:
        names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"runs", "records", "schema_version", "segments"} <= names


def test_run_dir_without_run_json_is_skipped(project):
    layout = locate(project)
    (layout.segments / "half-created").mkdir(parents=True)
    _fake_run(layout, "r1", epochs=1, steps=1)
    assert q(project, "SELECT run_id FROM runs")["run_id"].tolist() == ["r1"]


# -- SIGKILL --------------------------------------------------------------------------------


def test_sigkill_mid_epoch_keeps_earlier_epochs(project, tmp_path):
    k = 3
    marker = tmp_path / "in-epoch"
    proc = spawn(project, f"""
        import time
        import flordb as flor
        for epoch in flor.loop("epoch", range(10)):
            for step in flor.loop("step", range(5)):
                flor.log("loss", epoch + step / 10)
                if epoch == {k} and step == 2:
                    open({str(marker)!r}, "w").close()
                    time.sleep(60)
            flor.log("acc", epoch / 10)
    """)
    try:
        deadline = time.time() + 30
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the script never reached the marker"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    df = q(project, "SELECT epoch, step, loss, acc FROM logs ORDER BY epoch, step")
    assert sorted(set(df["epoch"])) == list(range(k))
    assert len(df) == k * 5
    assert df["acc"].notna().all()
    r = q(project, "SELECT status, ended FROM runs")
    assert r["status"].tolist() == ["interrupted"]
    # the catalog still opens and answers normally, and a new run is fine
    record(project, "import flordb as flor\nfor e in flor.loop('epoch', range(2)):\n    flor.log('x', e)\n",
           check=True)
    r = q(project, "SELECT status, count(*) AS n FROM runs GROUP BY status ORDER BY status")
    assert dict(zip(r["status"], r["n"])) == {"finished": 1, "interrupted": 1}
    with duckdb.connect(str(locate(project).catalog), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM records").fetchone()[0] == k * 5 + k + 2


def test_contexts_decode_nested_loops_and_top_level(tmp_path):
    """Int contexts from several blocks and depths come back as the right (path, coord)."""
    import duckdb

    blocks = Blocks()
    epoch = blocks.open(("epoch",), ())
    logs = [("top", 1.0, 0)]
    for e in range(2):
        logs.append(("acc", float(e), epoch + e))
        step = blocks.open(("epoch", "step"), (e,))
        for s in range(3):
            logs.append(("loss", float(10 * e + s), step + s))
            inner = blocks.open(("epoch", "step", "micro"), (e, s))
            logs.append(("m", 0.5, inner + 1))
    assert blocks.decode(step + 2) == (("epoch", "step"), (1, 2)) and blocks.decode(0) == ((), ())
    path = SegmentWriter(tmp_path).write(logs, [], [], blocks.table)
    rows = duckdb.sql(f"SELECT name, path, coord, num FROM read_parquet('{path}') ORDER BY seq").fetchall()
    expected = [(nm, list(blocks.decode(c)[0]), list(blocks.decode(c)[1]), v) for nm, v, c in logs]
    assert rows == expected
