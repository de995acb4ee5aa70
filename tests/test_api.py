"""The public query API: callable any number of times, results in the type asked for, layers kept apart."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import REPO_ROOT, base_env, make_project, record
from flordb.errors import QueryError

SCRIPT = r'''
import flordb as flor

lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(2)):
    for step in flor.loop("step", range(3)):
        flor.log("loss", 1.0 / (1 + epoch * 3 + step))
    flor.log("acc", epoch / 10)
'''


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("api") / "proj")
    record(root, SCRIPT, check=True)
    record(root, "train.py", "--kwargs", "lr=0.01", check=True)
    return root


def test_flor_query_twice_in_one_process(proj):
    """`flordb.query` stays the function after the SQL package and the orchestrator are imported."""
    code = (
        "import flordb as flor\n"
        "df = flor.query('SELECT count(*) AS n FROM logs WHERE step IS NOT NULL')\n"
        "df = flor.query('SELECT count(*) AS n FROM logs WHERE step IS NOT NULL')\n"
        "from flordb import query\n"
        "import flordb.sql.engine, flordb.api\n"
        "print(int(query('SELECT count(DISTINCT run_id) AS n FROM logs')['n'][0]), int(df['n'][0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=proj, env=base_env(proj), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "12"]


def test_results_as_pandas_arrow_and_polars(proj, monkeypatch):
    import flordb as flor

    monkeypatch.chdir(proj)
    sql = "SELECT run_id, epoch, acc FROM logs ORDER BY run_id, epoch"
    df = flor.query(sql)
    table = flor.query(sql, into="arrow")
    assert isinstance(table, pa.Table)
    assert table.column("acc").to_pylist() == df["acc"].tolist() == [0.0, 0.1, 0.0, 0.1]
    polars = pytest.importorskip("polars")
    pl = flor.query(sql, into="polars")
    assert isinstance(pl, polars.DataFrame) and pl["acc"].to_list() == [0.0, 0.1, 0.0, 0.1]
    assert flor.dataframe("acc", into="arrow").column_names == ["run_id", "version", "tstamp", "epoch", "acc"]
    with pytest.raises(QueryError, match="into="):
        flor.query(sql, into="excel")


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_lower_layers_never_import_higher_ones():
    """sql < hindsight < api < cli; store never reaches into record, comparison never into cli."""
    above = {
        "sql": ("flordb.hindsight", "flordb.api", "flordb.cli", "flordb.comparison"),
        "hindsight": ("flordb.api", "flordb.cli"),
        "store": ("flordb.record", "flordb.sql", "flordb.hindsight", "flordb.api", "flordb.cli"),
        "comparison": ("flordb.cli", "flordb.api"),
    }
    for layer, banned in above.items():
        for path in (REPO_ROOT / "flordb" / layer).rglob("*.py"):
            bad = [m for m in imports(path) if m.startswith(banned)]
            assert not bad, f"{path.relative_to(REPO_ROOT)} imports {bad}"
            assert "_hook" not in path.read_text(), f"{path.name} still has a hook"


def test_catalog_is_the_only_way_to_duckdb():
    for path in (REPO_ROOT / "flordb").rglob("*.py"):
        if path.parent.name == "store":
            continue
        text = path.read_text()
        assert ".con." not in text and "duckdb.connect" not in text, path


def test_first_query_does_not_load_hindsight_when_nothing_was_replayed(proj):
    code = (
        "import sys, flordb as flor\n"
        "flor.query('SELECT epoch, avg(loss) FROM logs GROUP BY ALL')\n"
        "print(any(m.startswith('flordb.hindsight.api') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=proj, env=base_env(proj), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("flags, eager", [(["-i"], True), ([], False)])
def test_import_loads_the_query_side_only_in_an_interactive_session(proj, flags, eager):
    """A notebook's (here `python -i`'s) first query does not pay for duckdb and pandas; a training script never loads them."""
    code = (
        "import sys, flordb as flor\n"
        "print([m in sys.modules for m in ('duckdb', 'pandas', 'flordb.api')])\n"
        "print(len(flor.query('SELECT DISTINCT run_id FROM logs')))\n"
    )
    out = subprocess.run([sys.executable, *flags, "-c", code], cwd=proj, env=base_env(proj), capture_output=True,
                         text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    loaded, runs = out.stdout.split("\n")[:2]
    assert loaded == str([eager] * 3) and runs == "2"
