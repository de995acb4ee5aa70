"""The `flordb` command: query (formats, errors, read-only), runs, python -m flordb."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import duckdb
import pytest
from click.testing import CliRunner

from conftest import base_env, make_project, record
from flordb.cli.main import cli
from flordb.store.layout import locate

SCRIPT = """
import flordb as flor
lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(2)):
    for step in flor.loop("step", range(3)):
        flor.log("loss", 1.0 / (1 + epoch * 3 + step))
    flor.log("acc", epoch / 10)
    flor.log("with space", epoch)
"""


def _two_runs(root):
    record(root, SCRIPT, check=True)
    record(root, "train.py", "--kwargs", "lr=0.01", check=True)
    return root


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Two recorded runs, shared by the tests that only read (they assert that they change nothing)."""
    return _two_runs(make_project(tmp_path_factory.mktemp("cli") / "proj"))


@pytest.fixture
def recorded(shared, monkeypatch):
    monkeypatch.delenv("FLORDB_HOME", raising=False)
    monkeypatch.chdir(shared)
    return shared


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def counts(project) -> dict:
    with duckdb.connect(str(locate(project).catalog), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def test_query_table_csv_json(recorded):
    r = invoke("query", "SELECT epoch, avg(loss) AS loss, max(acc) AS acc FROM logs GROUP BY ALL ORDER BY ALL")
    assert r.exit_code == 0, r.output
    assert "loss" in r.stdout and "(2 rows)" in r.stdout
    r = invoke("query", "SELECT lr, epoch, step, loss FROM logs WHERE lr > 0.05 ORDER BY epoch, step",
               "--format", "csv")
    assert r.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 6 and {row["lr"] for row in rows} == {"0.1"}
    assert float(rows[0]["loss"]) == 1.0
    r = invoke("query", 'SELECT DISTINCT epoch, "with space" FROM logs ORDER BY epoch', "-f", "json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == [{"epoch": 0, "with space": 0}, {"epoch": 1, "with space": 1}]


def test_query_honours_flordb_home(recorded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the project: FLORDB_HOME points at its store
    r = CliRunner().invoke(cli, ["query", "SELECT count(DISTINCT run_id) AS n FROM logs", "-f", "csv"],
                           env={"FLORDB_HOME": str(recorded / ".flordb")})
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == ["n", "2"]


@pytest.mark.parametrize("sql", [
    "SELEC loss FROM logs",
    "SELECT loss FROM logs WHERE",
    "SELECT (loss FROM logs",
    "SELECT nosuchcolumn FROM logs",
    "SELECT * FROM nosuchtable",
    "DROP TABLE runs",
    "DELETE FROM records",
    "SELECT 1; DROP TABLE runs",
])
def test_bad_sql_is_one_line_error_exit_2_and_changes_nothing(recorded, sql):
    invoke("query", "SELECT 1")  # ingest first, so that `before` is the settled state
    before = counts(recorded)
    catalog_bytes = locate(recorded).catalog.read_bytes()
    r = CliRunner().invoke(cli, ["query", sql, "--no-replay"])
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "Traceback" not in r.output
    assert counts(recorded) == before
    assert locate(recorded).catalog.read_bytes() == catalog_bytes


def test_unknown_column_error_suggests(recorded):
    r = CliRunner().invoke(cli, ["query", "SELECT los FROM logs", "--no-replay"])
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: ") and "'loss'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_runs_lists_status_and_args(project, monkeypatch):
    recorded = _two_runs(project)
    monkeypatch.chdir(project)
    record(recorded, "import flordb as flor\nfor e in flor.loop('epoch', range(2)):\n    flor.log('x', e)\n"
                     "raise KeyError('k')\n", check=False)
    r = invoke("runs", "-f", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3
    assert [row["status"] for row in rows] == ["finished", "finished", "failed"]
    assert rows[0]["args"] == "lr=0.1" and rows[1]["args"] == "lr=0.01"
    assert rows[0]["script"] == "train.py"
    assert all(len(row["version"]) == 7 for row in rows)
    assert "KeyError" in rows[2]["error"]
    t = invoke("runs")
    assert t.exit_code == 0 and "finished" in t.stdout and "lr=0.01" in t.stdout


def test_runs_on_empty_project(project, monkeypatch):
    monkeypatch.chdir(project)
    r = invoke("runs")
    assert r.exit_code == 0, r.output
    q = invoke("query", "SELECT 1")
    assert q.exit_code == 2 and "no FlorDB store" in q.stderr
    assert not (project / ".flordb").exists()  # reading never creates a store


def test_python_m_flordb_help(project):
    p = subprocess.run([sys.executable, "-m", "flordb", "--help"], cwd=project, env=base_env(project),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for command in ("query", "runs", "shell"):
        assert command in p.stdout


def test_python_m_flordb_query_exit_code(project):
    record(project, SCRIPT, check=True)
    p = subprocess.run([sys.executable, "-m", "flordb", "query", "SELEC 1"], cwd=project, env=base_env(project),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("Error: ") and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([sys.executable, "-m", "flordb", "query", "SELECT count(loss) AS n FROM logs", "-f", "csv"],
                       cwd=project, env=base_env(project), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.split() == ["n", "6"]


def test_table_keeps_text_that_looks_like_a_number(project, monkeypatch):
    record(project, """
        import flordb as flor
        for e in flor.loop("epoch", range(1)):
            flor.log("tag", "0123")
            flor.log("sci", "1e5")
    """, check=True)
    monkeypatch.chdir(project)
    r = invoke("query", "SELECT tag, sci FROM logs")
    assert r.exit_code == 0
    assert "0123" in r.stdout and "1e5" in r.stdout and "100000" not in r.stdout
