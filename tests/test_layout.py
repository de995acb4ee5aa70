"""Issue 12, item 7: the physical layout of log records and segments.

Records are stored by ids with typed coordinates (schema/022_record_layout.sql),
sorted by (name, run, path, coordinates); ``records`` keeps its old columns as a
view; a catalog from before is migrated in place with nothing lost; a finished
run's segments are folded into one file that rebuilds the same catalog.
"""

from __future__ import annotations

import time

import duckdb
import pyarrow.parquet as pq

from conftest import q
from flordb.record.context import Blocks
from flordb.store.catalog import migrations, open_catalog
from flordb.store.doctor import rebuild
from flordb.store.layout import locate
from flordb.store.segments import SegmentWriter, compact, segment_files, write_json_atomic

DEEP = ("a", "b", "c", "d", "e")  # five loop levels: one beyond the typed coordinate columns


def _run(layout, run_id, epochs=3, steps=4, ended=True, text=False):
    """A run written through the runtime's writer: step-level loss, epoch-level acc, one 5-deep value."""
    d = layout.run_dir(run_id)
    d.mkdir(parents=True)
    write_json_atomic(d / "run.json", {"run_id": run_id, "script": "t.py", "started": time.time(), "pid": 0,
                                       "host": "elsewhere", "version": None})
    w = SegmentWriter(d)
    blocks = Blocks()
    outer = blocks.open(("epoch",), ())
    deep = blocks.open(DEEP, (1, 2, 3, 4))
    for e in range(epochs):
        inner = blocks.open(("epoch", "step"), (e,))
        logs = [("loss", float(100 * e + s) + (0.5 if run_id.endswith("2") else 0.0), inner + s)
                for s in range(steps)]
        logs.append(("acc", e / 10, outer + e))
        if text:
            logs.append(("note", f"epoch {e}", outer + e))
        if e == 0:
            logs.append(("deep", 7, deep + 5))
        events = [{"kind": "iter", "path": ("epoch",), "coord": (e,), "t0": 0.0, "t1": 1.0}]
        w.write(logs, [("lr", 0.1)] if e == 0 else [], events, blocks.table)
    if ended:
        write_json_atomic(d / "end.json", {"status": "finished", "ended": time.time(), "error": None})
    return d


def _records(layout):
    with open_catalog(layout) as cat:
        return sorted(cat.execute("SELECT run_id, seq, name, path, coord, vtype, num, txt, replay_id FROM records")
                      .fetchall(), key=repr)


def test_records_keep_their_columns_and_logs_answer(project):
    layout = locate(project)
    _run(layout, "r1", text=True)
    _run(layout, "r2")
    got = q(project, "SELECT run_id, epoch, step, loss, acc FROM logs ORDER BY ALL")
    assert len(got) == 2 * 3 * 4
    row = got[(got.run_id == "r2") & (got.epoch == 2) & (got.step == 3)].iloc[0]
    assert (row.loss, row.acc) == (203.5, 0.2)  # a per-epoch column joined on its epoch
    avg = q(project, "SELECT run_id, epoch, avg(loss) AS l, max(acc) AS a FROM logs GROUP BY ALL ORDER BY ALL")
    assert avg.l.tolist() == [1.5, 101.5, 201.5, 2.0, 102.0, 202.0] and avg.a.tolist() == [0.0, 0.1, 0.2] * 2
    one = q(project, "SELECT step, loss FROM logs WHERE run_id = 'r1' AND epoch = 1 ORDER BY step")
    assert one.loss.tolist() == [100.0, 101.0, 102.0, 103.0]
    assert q(project, "SELECT note FROM logs WHERE run_id = 'r1' AND note IS NOT NULL ORDER BY ALL"
             ).note.tolist() == ["epoch 0", "epoch 1", "epoch 2"]
    deep = q(project, "SELECT run_id, a, b, c, d, e, deep FROM logs WHERE deep IS NOT NULL ORDER BY run_id")
    assert deep.values.tolist() == [["r1", 1, 2, 3, 4, 5, 7], ["r2", 1, 2, 3, 4, 5, 7]]
    with open_catalog(layout) as cat:
        (coord, path), = cat.execute("SELECT coord, path FROM records WHERE name = 'deep' AND run_id = 'r1'").fetchall()
        assert (coord, path) == ([1, 2, 3, 4, 5], list(DEEP))  # the old shape, five levels deep
        assert cat.execute("SELECT count(*) FROM records").fetchone() == (2 * 3 * 4 + 2 * 3 + 3 + 2,)
        # rows are stored sorted by (name, run, path, coordinates), so row groups prune
        keys = cat.execute("SELECT name_id, run_key, path_id, c1, c2 FROM record_rows ORDER BY rowid").fetchall()
        assert keys == sorted(keys, key=lambda k: tuple(-1 if x is None else x for x in k))


def test_a_catalog_from_before_is_migrated_in_place_with_nothing_lost(project):
    layout = locate(project)
    layout.home.mkdir(parents=True)
    con = duckdb.connect(str(layout.catalog))  # a catalog as version 21 left it
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name VARCHAR,"
                " applied TIMESTAMPTZ DEFAULT current_timestamp)")
    for number, name, sql in migrations():
        if number <= 21:
            con.execute(sql)
            con.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [number, name])
    con.execute("INSERT INTO runs (run_id, mode, complete, status) VALUES ('old1', 'record', true, 'finished'),"
                " ('old2', 'record', true, 'finished')")
    rows = [("old1", 0, "loss", ["epoch", "step"], [0, 1], 1, 0.25, None, None),
            ("old1", 1, "loss", ["epoch", "step"], [1, 0], 1, 0.5, None, None),
            ("old1", 2, "acc", ["epoch"], [1], 1, 0.9, None, None),
            ("old2", 0, "loss", ["epoch", "step"], [0, 0], 1, 2.0, None, "replay-x"),
            ("old2", 1, "msg", [], [], 4, None, "hello", None),
            ("old2", 2, "deep", list(DEEP), [0, 1, 2, 3, 4], 2, 3.0, None, None)]
    con.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.executemany("INSERT INTO log_names VALUES (?, ?, ?, ?, 1, ?, 0)",
                    [(r[0], r[2], r[3], r[5], r[8] is not None) for r in rows])
    con.execute("INSERT INTO loops VALUES ('old1', 'iter', ['epoch'], [0], NULL, 0, 1, NULL, NULL)")
    con.close()

    assert _records(layout) == sorted(rows, key=repr)
    with open_catalog(layout) as cat:
        assert cat.schema_version == max(n for n, _, _ in migrations())
        assert cat.execute("SELECT count(*) FROM run_keys").fetchone() == (2,)
    got = q(project, "SELECT run_id, epoch, step, loss, acc FROM logs WHERE loss IS NOT NULL ORDER BY ALL")
    assert got.fillna(-1).values.tolist() == [["old1", 0, 1, 0.25, -1], ["old1", 1, 0, 0.5, 0.9],
                                              ["old2", 0, 0, 2.0, -1]]
    assert q(project, "SELECT msg FROM logs WHERE msg IS NOT NULL").msg.tolist() == ["hello"]


def test_a_finished_run_is_folded_into_one_segment_that_rebuilds_the_same_catalog(project):
    layout = locate(project)
    _run(layout, "r1")
    running = _run(layout, "r2", ended=False)
    before = q(project, "SELECT run_id, epoch, step, loss, acc FROM logs ORDER BY ALL")
    assert [f.name for f in segment_files(layout.run_dir("r1"))] == ["seg-000001-000003.parquet"]
    assert len(segment_files(running)) == 3  # still being written: left alone
    old, runs, rows = rebuild(layout)
    assert old is not None and runs == 2 and rows == 2 * (3 * 4 + 3 + 1)
    after = q(project, "SELECT run_id, epoch, step, loss, acc FROM logs ORDER BY ALL")
    assert after.equals(before)


def test_folding_stopped_halfway_reads_each_record_once(project, tmp_path):
    layout = locate(project)
    d = _run(layout, "r1")
    originals = {f.name: f.read_bytes() for f in segment_files(d)}
    written = [x for f in segment_files(d) for x in pq.read_table(f, columns=["seq", "kind"]).to_pylist()]
    with open_catalog(layout) as cat:
        cat.ingest()  # folds r1
    (folded,) = segment_files(d)
    assert pq.read_table(folded, columns=["seq", "kind"]).to_pylist() == written  # in write order
    for name, data in originals.items():  # as if the process died before removing the originals
        (d / name).write_bytes(data)
    assert [f.name for f in segment_files(d)] == ["seg-000001-000003.parquet"]
    assert compact(d, duckdb.connect()) is None  # folded already
    rebuild(layout)
    assert q(project, "SELECT count(*) AS n FROM logs WHERE loss IS NOT NULL").n.tolist() == [12]


def test_a_damaged_folded_segment_is_quarantined_like_any_segment(project):
    layout = locate(project)
    _run(layout, "r1")
    _run(layout, "r2")
    assert len(q(project, "SELECT loss FROM logs")) == 24  # ingested, so both runs are folded
    (folded,) = segment_files(layout.run_dir("r1"))
    folded.write_bytes(folded.read_bytes()[:80])
    rebuild(layout)
    assert q(project, "SELECT DISTINCT run_id FROM logs WHERE loss IS NOT NULL").run_id.tolist() == ["r2"]
    with open_catalog(layout) as cat:
        (file,), = cat.execute("SELECT file FROM quarantine").fetchall()
    assert file.endswith("seg-000001-000003.parquet") and (layout.home / "quarantine" / "r1").is_dir()
