"""Big integers print exactly: HUGEINT, UBIGINT and exact-text integers in every output format.

DuckDB hands HUGEINT to pandas and Arrow as DECIMAL(38,0); tabulate prints a
Decimal through float() ("1.20893e+24") and JSON would quote it. These logs,
queried from the CLI, the shell and the Python API, must show every digit.
"""

from __future__ import annotations

import decimal
import json

import pytest
from click.testing import CliRunner

from conftest import make_project, record
from flordb.cli.main import cli
from flordb.tabular import FORMATS, Rows, render

BIG = {"big": 2**63 - 1, "bigger": 2**63 + 5, "huge": 2**80 + 1, "negative": -(2**70) - 3}
GIANT = 10**40 + 1  # beyond HUGEINT: stored as exact text

SCRIPT = f"""
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    for name, value in {BIG!r}.items():
        flor.log(name, value + epoch)
    flor.log("giant", {GIANT} + epoch)
    if epoch == 1:
        flor.log("sparse", 2**70 + 7)  # NULL in the other row
"""
SQL = "SELECT epoch, big, bigger, huge, negative, giant, sparse FROM logs ORDER BY epoch"
DIGITS = [str(v + e) for v in BIG.values() for e in (0, 1)] + [str(GIANT), str(GIANT + 1), str(2**70 + 7)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("bigints") / "proj")
    record(root, SCRIPT, check=True)
    return root


def _assert_exact(text: str) -> None:
    for digits in DIGITS:
        assert digits in text, (digits, text)
    assert "e+" not in text, text


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "vertical"])
def test_flordb_query_prints_every_digit(project, monkeypatch, fmt):
    monkeypatch.chdir(project)
    r = CliRunner().invoke(cli, ["query", SQL, "--format", fmt, "--no-replay"])
    assert r.exit_code == 0, r.output
    _assert_exact(r.output)
    if fmt == "json":
        rows = json.loads(r.output)
        assert rows[0]["huge"] == 2**80 + 1 and rows[1]["negative"] == -(2**70) - 2 and rows[1]["sparse"] == 2**70 + 7


def test_shell_modes_print_every_digit(project, monkeypatch):
    monkeypatch.chdir(project)
    modes = "".join(f".mode {fmt}\n{SQL};\n" for fmt in ("table", "csv", "json", "vertical"))
    r = CliRunner().invoke(cli, ["shell"], input=modes)
    assert r.exit_code == 0, r.output
    for block in r.output.split("Output format:")[1:]:
        _assert_exact(block)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_python_api_dataframe_renders_exactly(project, fmt):
    import flordb as flor
    from flordb.store.layout import locate

    df = flor.query(SQL, replay="no", layout=locate(project))
    assert isinstance(df["huge"].dropna().iloc[0], (int, decimal.Decimal))
    _assert_exact(render(df, fmt, width=0))
    if fmt == "json":
        assert json.loads(render(df, "json"))[0]["big"] == 2**63 - 1


def test_decimals_and_mixed_columns():
    rows = Rows(["d", "mixed", "frac"], [[decimal.Decimal(2**90), 2**64 + 1, decimal.Decimal("1.25")],
                                         [None, 0.5, None]])
    table = render(rows, width=0)
    assert str(2**90) in table and str(2**64 + 1) in table and "0.5" in table and "1.25" in table
    assert json.loads(render(rows, "json"))[0] == {"d": 2**90, "mixed": 2**64 + 1, "frac": "1.25"}
    assert render(rows, "csv").splitlines()[1] == f"{2**90},{2**64 + 1},1.25"
