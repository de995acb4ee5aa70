"""Runs people can name, `flordb tag/note/export`, EXPLAIN of a missing column, errors with DuckDB's hints."""

from __future__ import annotations

import json
import os
import stat

import duckdb
import pytest
from click.testing import CliRunner

from conftest import make_project, record
from flordb.cli.main import cli
from flordb.store.layout import locate

SCRIPT = r'''
import argparse
import flordb as flor

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
opts = parser.parse_args()
lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(opts.epochs)):
    for step in flor.loop("step", range(3)):
        flor.log("loss", lr * (epoch * 3 + step))
    flor.log("acc", epoch / 10)
'''


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("runs") / "proj")
    first = record(root, SCRIPT, check=True)
    record(root, "train.py", "--epochs", "2", "--kwargs", "lr=0.01", "flor.name=small-lr", "flor.tag=sweep",
           check=True)
    record(root, "train.py", "--kwargs", "lr=0.5", "flor.tag=sweep", check=True)
    assert "finished; query it: flordb query" in first.stderr  # training names its run at exit
    return root


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def runs_json(proj, monkeypatch) -> list[dict]:
    monkeypatch.chdir(proj)
    r = invoke("runs", "--format", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_runs_json_has_args_as_objects_names_and_argv(proj, monkeypatch):
    rows = runs_json(proj, monkeypatch)
    assert [r["args"] for r in rows] == [{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.5}]
    assert rows[1]["name"] == "small-lr" and rows[1]["tags"] == "sweep"
    with duckdb.connect(str(locate(proj).catalog), read_only=True) as con:
        argv = con.execute("SELECT argv FROM runs ORDER BY started").fetchall()
    assert argv[1][0] == ["--epochs", "2", "--kwargs", "lr=0.01", "flor.name=small-lr", "flor.tag=sweep"]


def test_run_references_and_tags(proj, monkeypatch):
    rows = runs_json(proj, monkeypatch)
    ids = [r["run_id"] for r in rows]
    assert invoke("tag", "HEAD", "best").exit_code == 0
    assert invoke("tag", ids[0][-6:], "first", "--name").exit_code == 0  # the random suffix is enough
    assert invoke("note", "HEAD~1", "lr too small").exit_code == 0
    assert invoke("tag", "small-lr", "again").exit_code == 0  # a name is a reference
    after = {r["run_id"]: r for r in runs_json(proj, monkeypatch)}
    assert "best" in after[ids[2]]["tags"] and after[ids[0]]["name"] == "first"
    assert after[ids[1]]["note"] == "lr too small" and "again" in after[ids[1]]["tags"]
    ambiguous = invoke("tag", "sweep", "x")
    assert ambiguous.exit_code == 2 and "matches 2 runs" in ambiguous.stderr
    missing = invoke("note", "HEAD~9", "x")
    assert missing.exit_code == 2 and "no recorded run matches" in missing.stderr


def test_a_tag_is_removed_with_remove(proj, monkeypatch):
    runs_json(proj, monkeypatch)
    assert invoke("tag", "HEAD", "to-go").exit_code == 0
    assert "to-go" in (runs_json(proj, monkeypatch)[-1]["tags"] or "")
    gone = invoke("tag", "HEAD", "to-go", "--remove")
    assert gone.exit_code == 0 and "'to-go' removed from run" in gone.stderr
    assert "to-go" not in (runs_json(proj, monkeypatch)[-1]["tags"] or "")
    again = invoke("tag", "HEAD", "to-go", "--remove")
    assert again.exit_code == 2 and "has no tag 'to-go'" in again.stderr


def test_replay_workers_are_not_runs(proj, monkeypatch):
    """A replay worker's run directory lands in replay_workers; `runs` counts what people recorded."""
    from flordb.store.segments import write_json_atomic

    monkeypatch.chdir(proj)
    before = invoke("query", "SELECT count(*) AS n FROM runs", "-f", "csv").stdout
    d = locate(proj).segments / "20990101-000000-worker"
    d.mkdir()
    write_json_atomic(d / "run.json", {"run_id": d.name, "mode": "replay", "replay_of": "x", "replay_id": "r1",
                                       "script": "train.py", "started": 1.0, "pid": 0, "host": "elsewhere"})
    write_json_atomic(d / "end.json", {"status": "finished", "ended": 2.0})
    assert invoke("query", "SELECT count(*) AS n FROM runs", "-f", "csv").stdout == before == "n\n3\n"
    assert invoke("query", "SELECT run_id FROM replay_workers", "-f", "csv").stdout == f"run_id\n{d.name}\n"
    assert d.name in invoke("runs", "--all", "-f", "csv").stdout
    assert d.name not in invoke("runs", "-f", "csv").stdout


def test_export_duckdb_and_parquet_for_other_clients(proj, monkeypatch, tmp_path):
    monkeypatch.chdir(proj)
    r = invoke("export", "--to", str(tmp_path / "runs.duckdb"))
    assert r.exit_code == 0, r.output
    target = tmp_path / "runs.duckdb"
    assert not os.stat(target).st_mode & stat.S_IWUSR  # a read-only snapshot
    with duckdb.connect(str(target), read_only=True) as con:  # a plain DuckDB client, no FlorDB
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
        got = con.execute("SELECT lr, epoch, step, loss, acc FROM logs WHERE lr = 0.5 AND epoch = 1 AND step = 2"
                          ).fetchall()
        assert got == [(0.5, 1, 2, 2.5, 0.1)]
    r = invoke("export", "--to", str(tmp_path / "runs.parquet"))
    assert r.exit_code == 0, r.output
    import pandas as pd

    logs = pd.read_parquet(tmp_path / "runs.parquet" / "logs.parquet")
    assert len(logs) == 3 * 2 * 3 and {"run_id", "lr", "epoch", "step", "loss", "acc"} <= set(logs.columns)
    assert invoke("export", "--to", str(tmp_path / "x.csv")).exit_code == 2


def test_explain_of_a_missing_column_shows_the_replay_plan_and_runs_nothing(proj, monkeypatch):
    monkeypatch.chdir(proj)
    source = (proj / "train.py").read_text()
    (proj / "train.py").write_text(source.replace('    flor.log("acc", epoch / 10)',
                                                  '    flor.log("acc", epoch / 10)\n    flor.log("acc2", epoch)'))
    try:
        r = invoke("query", "EXPLAIN SELECT epoch, avg(acc2) FROM logs GROUP BY ALL")
        assert r.exit_code == 0, r.output
        assert "acc2 is missing from 3 runs" in r.stdout and "nothing was replayed" in r.stdout
        assert invoke("query", "SELECT count(*) AS n FROM replays", "-f", "csv").stdout == "n\n0\n"
        plain = invoke("query", "EXPLAIN SELECT epoch, avg(acc) FROM logs GROUP BY ALL", "-f", "csv")
        assert plain.exit_code == 0 and "physical_plan" in plain.stdout
    finally:
        (proj / "train.py").write_text(source)


@pytest.mark.parametrize("sql, words", [
    ("SELEC run_id FROM logs", ["'SELEC' is not a statement", "did you mean SELECT?"]),
    ("SELECT statu FROM runs", ["statu", "Candidate bindings"]),
])
def test_errors_name_the_mistake_with_duckdbs_hints(proj, monkeypatch, sql, words):
    monkeypatch.chdir(proj)
    r = invoke("query", sql)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    for w in words:
        assert w in r.stderr, r.stderr
