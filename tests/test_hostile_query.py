"""Issue 11, failures 1 and 10: queries are read-only by construction, errors are one line.

Every hostile statement below is refused with a one-line error; afterwards no
file was written anywhere, the store is byte-identical and ``logs`` still
answers the recorded values. The read-only connection is also tested on its
own (without the statement check), so each fence holds by itself.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from conftest import make_project, q
from flordb.errors import QueryError
from flordb.store.layout import locate
from flordb.store.readonly import connect_reader, is_lock_error
from flordb.store.segments import SegmentWriter, write_json_atomic

NESTED = "SELECT " + "(" * 45 + "1" + ")" * 45

HOSTILE = [
    "EXPLAIN ANALYZE COPY (SELECT 42) TO 'x.csv'",
    "EXPLAIN COPY (SELECT 42) TO 'x.csv'",
    "EXPLAIN (FORMAT json) COPY (SELECT 42) TO 'x.csv'",
    "COPY (SELECT 42) TO 'x.csv'",
    "COPY (SELECT 'import os') TO 'evil.pth'",
    "COPY (SELECT 'finished' AS status) TO '.flordb/segments/{run}/end.json' (FORMAT json)",
    "COPY (SELECT * FROM records) TO '.flordb/segments/{run}/seg-000999.parquet' (FORMAT parquet)",
    "PRAGMA import_database('elsewhere')",
    "WITH d AS (DELETE FROM records RETURNING *) SELECT count(*) FROM d",
    "WITH u AS (UPDATE runs SET status = 'finished' RETURNING *) SELECT * FROM u",
    "WITH i AS (INSERT INTO records (run_id) VALUES ('x') RETURNING *) SELECT * FROM i",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_parquet('.flordb/segments/*/*.parquet')",
    "ATTACH 'other.duckdb' AS o",
    "DETACH main",
    "LOAD httpfs",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "DROP TABLE records",
    "ALTER TABLE runs ADD COLUMN x INT",
    "INSERT INTO runs (run_id) VALUES ('forged')",
    "UPDATE runs SET status = 'finished'",
    "DELETE FROM records",
    "CHECKPOINT",
    "VACUUM",
    "EXPORT DATABASE 'dump'",
    "BEGIN TRANSACTION",
    "CALL pragma_version()",
    "USE memory",
    NESTED,
    "-- only a comment",
    "",
    "SELECT 1; DROP TABLE records",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A project with one run ('r1': loss 0.5, 0.25 at epochs 0, 1) ingested, and the cwd inside it."""
    from flordb.record.context import Blocks

    root = make_project(tmp_path_factory.mktemp("hostile") / "proj")
    layout = locate(root)
    d = layout.run_dir("r1")
    d.mkdir(parents=True)
    write_json_atomic(d / "run.json", {"run_id": "r1", "script": "t.py", "started": time.time(), "pid": 0,
                                       "host": "elsewhere", "version": None})
    blocks = Blocks()
    epoch = blocks.open(("epoch",), ())
    SegmentWriter(d).write([("loss", 0.5, epoch), ("loss", 0.25, epoch + 1)], [], [], blocks.table)
    write_json_atomic(d / "end.json", {"status": "interrupted", "ended": time.time()})
    q(root, "SELECT loss FROM logs")  # ingest
    return root


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_statement_is_refused_in_one_line_and_changes_nothing(store, sql, monkeypatch):
    monkeypatch.chdir(store)
    before = _tree(store)
    with pytest.raises(QueryError) as err:
        q(store, sql.format(run="r1"))
    message = str(err.value)
    assert message and "\n" not in message and "Traceback" not in message
    assert _tree(store) == before  # nothing written: not in the project, not in the store
    df = q(store, "SELECT epoch, loss FROM logs ORDER BY epoch")
    assert df["loss"].tolist() == [0.5, 0.25]
    assert q(store, "SELECT status FROM runs")["status"].tolist() == ["interrupted"]


@pytest.mark.parametrize("sql", ["LOAD httpfs", "-- only a comment", NESTED, "COPY (SELECT 1) TO 'x.csv'"])
def test_cli_errors_are_one_line(store, sql, monkeypatch):
    from flordb.cli.main import cli

    monkeypatch.chdir(store)
    result = CliRunner().invoke(cli, ["query", sql])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


def test_reader_connection_cannot_write_or_reach_files_on_its_own(store, monkeypatch):
    """Fence 2 without fence 1: DuckDB itself refuses."""
    monkeypatch.chdir(store)
    con = connect_reader(locate(store).catalog)
    try:
        for sql in ("INSERT INTO runs (run_id) VALUES ('x')", "COPY (SELECT 1) TO 'x.csv'",
                    "SELECT * FROM read_csv('/etc/passwd')", "SET enable_external_access = true",
                    "ATTACH 'o.duckdb'"):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        assert con.execute("SELECT count(*) FROM records").fetchone() == (2,)
    finally:
        con.close()
    assert not (store / "x.csv").exists() and not (store / "o.duckdb").exists()


def test_allow_files_opens_a_named_file_for_reading_only(store, tmp_path, monkeypatch):
    from flordb.api import query

    monkeypatch.chdir(store)
    data = tmp_path / "labels.csv"
    data.write_text("epoch,label\n0,a\n1,b\n")
    other = tmp_path / "other.csv"
    other.write_text("x\n1\n")
    sql = f"SELECT l.epoch, loss, label FROM logs l JOIN read_csv('{data}') c ON c.epoch = l.epoch ORDER BY 1"
    with pytest.raises(QueryError, match="--allow-files"):
        q(store, sql)
    df = query(sql, replay="no", layout=locate(store), allow_files=[data])
    assert df["label"].tolist() == ["a", "b"]
    with pytest.raises(QueryError):  # only the named file
        query(f"SELECT * FROM read_csv('{other}')", replay="no", layout=locate(store), allow_files=[data])
    with pytest.raises(QueryError, match="COPY"):  # and only for reading
        query(f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'", replay="no", layout=locate(store),
              allow_files=[tmp_path])
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(QueryError, match="no such file"):
        query("SELECT 1", replay="no", layout=locate(store), allow_files=[tmp_path / "missing.csv"])


def test_read_only_statements_still_work(store, monkeypatch):
    monkeypatch.chdir(store)
    assert len(q(store, "DESCRIBE runs")) > 5
    assert len(q(store, "EXPLAIN SELECT * FROM runs")) >= 1
    assert "runs" in q(store, "SHOW TABLES")["name"].tolist()
    assert len(q(store, "PRAGMA table_info('runs')")) > 5
    assert q(store, "WITH x AS (SELECT loss FROM logs) SELECT max(loss) AS m FROM x")["m"][0] == 0.5


@pytest.mark.parametrize("exc, is_lock", [
    (duckdb.IOException('IO Error: Could not set lock on file "/x/flor.duckdb": Conflicting lock is held'), True),
    (duckdb.IOException("IO Error: Corrupt database file: computed checksum does not match for block 12"), False),
    (duckdb.IOException('IO Error: The file "/x" exists, but it is not a valid DuckDB database file!'), False),
    (duckdb.InvalidInputException("could not set lock on file (not an IO error)"), False),
])
def test_lock_detection_uses_duckdbs_lock_error(exc, is_lock):
    assert is_lock_error(exc) is is_lock
