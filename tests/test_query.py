"""The query side: the `logs` view, types, names, joins across loop depths, raw tables."""

from __future__ import annotations

import json
import math

import duckdb
import pandas as pd
import pytest

from conftest import make_project, q, record
from flordb.errors import QueryError, UnknownColumnError
from flordb.store.catalog import open_catalog
from flordb.store.layout import locate

SCRIPT = r'''
import flordb as flor

class Plain:
    def __repr__(self):
        return "Plain()"

lr = flor.arg("lr", 0.1)
layers = flor.arg("layers", [8, 4])
flor.log("setup", "ok")
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(4 if epoch < 2 else 0)):   # epoch 2 has no steps
        flor.log("loss", 1.0 / (1 + epoch * 4 + step))
        flor.log("i", epoch * 4 + step)
        flor.log("flag", step % 2 == 0)
        flor.log("tag", f"t{step}")
    for k in flor.loop("eval_step", range(2)):
        flor.log("val_loss", epoch + k / 10)
    flor.log("acc", epoch / 10)
    flor.log("epoch", epoch * 10)                                   # same name as the loop
    flor.log("special", [float("nan"), float("inf"), float("-inf")][epoch])
    flor.log("vec", [1, 2, epoch])
    flor.log("cfg", {"e": epoch, "name": "x"})
    flor.log("obj", Plain())
    for name in ["it's", "with space", "a.b", "ünï", "select", "from", 'dq"x']:
        flor.log(name, epoch)
flor.log("final", 0.9)
'''

WEIRD = ["it's", "with space", "a.b", "ünï", "select", "from", 'dq"x']


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("query") / "proj")
    p1 = record(root, SCRIPT, check=True)
    record(root, "train.py", "--kwargs", "lr=0.01", check=True)
    assert p1.stderr.count("'obj'") == 1  # repr fallback warned once per name
    return root


def one_run(proj) -> str:
    return q(proj, "SELECT DISTINCT run_id FROM logs WHERE lr = 0.01")["run_id"][0]


# -- types and values -------------------------------------------------------------------------------


def test_types(proj):
    df = q(proj, "SELECT typeof(i) AS i, typeof(flag) AS flag, typeof(tag) AS tag, typeof(loss) AS loss,"
                 " typeof(vec) AS vec, typeof(cfg) AS cfg, typeof(special) AS special, typeof(obj) AS obj,"
                 " typeof(lr) AS lr, typeof(layers) AS layers, typeof(epoch) AS epoch, typeof(step) AS step"
                 " FROM logs WHERE step = 0 LIMIT 1")
    assert df.iloc[0].to_dict() == {
        "i": "BIGINT", "flag": "BOOLEAN", "tag": "VARCHAR", "loss": "DOUBLE", "vec": "JSON", "cfg": "JSON",
        "special": "DOUBLE", "obj": "VARCHAR", "lr": "DOUBLE", "layers": "JSON", "epoch": "BIGINT",
        "step": "BIGINT",
    }


def test_numbers_compare_numerically(proj):
    df = q(proj, "SELECT loss FROM logs WHERE loss < 0.5 AND lr = 0.1 ORDER BY loss")
    assert df["loss"].tolist() == pytest.approx([1 / 8, 1 / 7, 1 / 6, 1 / 5, 1 / 4, 1 / 3])
    df = q(proj, "SELECT avg(loss) AS a, sum(i) AS s, max(i) AS m FROM logs WHERE lr = 0.1")
    assert df["a"][0] == pytest.approx(sum(1 / (1 + x) for x in range(8)) / 8)
    assert df["s"][0] == sum(range(8)) and df["m"][0] == 7
    assert q(proj, "SELECT count(*) AS n FROM logs WHERE i >= 6 AND flag")["n"][0] == 2  # i=6 per run
    assert q(proj, "SELECT count(*) AS n FROM logs WHERE lr < 0.05 AND step IS NOT NULL")["n"][0] == 8


def test_nan_and_inf_are_kept(proj):
    df = q(proj, "SELECT DISTINCT epoch, isnan(special) AS nan, isinf(special) AS inf, special > 0 AS pos"
                 " FROM logs WHERE lr = 0.1 ORDER BY epoch")
    assert df["nan"].tolist() == [True, False, False]
    assert df["inf"].tolist() == [False, True, True]
    assert df["pos"].tolist()[1:] == [True, False]


def test_json_and_repr_values(proj):
    df = q(proj, "SELECT DISTINCT epoch, vec, json_array_length(vec) AS n, cfg->>'$.name' AS nm,"
                 " layers->>'$[0]' AS l0, obj FROM logs WHERE lr = 0.1 ORDER BY epoch")
    assert [json.loads(v) for v in df["vec"]] == [[1, 2, 0], [1, 2, 1], [1, 2, 2]]
    assert df["n"].tolist() == [3, 3, 3] and df["nm"].tolist() == ["x"] * 3 and df["l0"].tolist() == ["8"] * 3
    assert df["obj"].tolist() == ["Plain()"] * 3


# -- names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WEIRD)
def test_weird_names_are_queryable(proj, name):
    df = q(proj, f"SELECT DISTINCT epoch, {quote(name)} FROM logs WHERE lr = 0.1 ORDER BY epoch")
    assert list(df.columns) == ["epoch", name]
    assert df[name].tolist() == [0, 1, 2]
    df = q(proj, f"SELECT sum({quote(name)}) AS s FROM logs WHERE {quote(name)} > 0")
    assert df["s"][0] > 0


def test_weird_names_cannot_inject(proj):
    # a name is never spliced into SQL text: a name that looks like SQL is just a missing column
    with pytest.raises(UnknownColumnError):
        q(proj, 'SELECT "x""; DROP TABLE runs; --" FROM logs')
    assert len(q(proj, "SELECT * FROM runs")) == 2


def test_log_named_like_a_loop_column_does_not_shadow(proj):
    df = q(proj, 'SELECT DISTINCT epoch, "log.epoch" FROM logs WHERE lr = 0.1 ORDER BY epoch')
    assert df["epoch"].tolist() == [0, 1, 2]
    assert df["log.epoch"].tolist() == [0, 10, 20]


def test_unknown_column_has_suggestions(proj):
    with pytest.raises(UnknownColumnError) as info:
        q(proj, "SELECT los FROM logs")
    assert info.value.names == ["los"] and "loss" in info.value.suggestions["los"]
    assert "\n" not in str(info.value)


# -- shape of logs ------------------------------------------------------------------------------------------


def test_nested_names_joined_on_shared_coordinates(proj):
    df = q(proj, "SELECT epoch, step, loss, acc FROM logs WHERE lr = 0.1 ORDER BY epoch, step NULLS LAST")
    assert len(df) == 9
    assert df["epoch"].tolist() == [0] * 4 + [1] * 4 + [2]
    assert df["acc"].tolist() == [0.0] * 4 + [0.1] * 4 + [0.2]  # epoch-level acc repeated per step
    assert pd.isna(df["step"].iloc[-1]) and pd.isna(df["loss"].iloc[-1])  # epoch without steps still shows


def test_sibling_loops_are_stacked_not_crossed(proj):
    df = q(proj, "SELECT epoch, step, eval_step, loss, val_loss, acc FROM logs WHERE lr = 0.1"
                 " ORDER BY epoch, step NULLS LAST, eval_step")
    assert len(df) == 4 + 2 + 4 + 2 + 2  # not 4 x 2 per epoch
    assert ((df["step"].isna()) != (df["eval_step"].isna())).all()
    assert df["val_loss"].notna().sum() == 6 and df["loss"].notna().sum() == 8
    assert df.groupby("epoch")["acc"].nunique().tolist() == [1, 1, 1]


def test_top_level_logs_repeat_on_every_row(proj):
    df = q(proj, "SELECT DISTINCT setup, final FROM logs")
    assert df.values.tolist() == [["ok", 0.9]]
    df = q(proj, "SELECT epoch, step, loss, final FROM logs WHERE lr = 0.1")
    assert len(df) == 8 and (df["final"] == 0.9).all()


def test_select_star(proj):
    df = q(proj, "SELECT * FROM logs")
    for c in ["run_id", "version", "tstamp", "script", "epoch", "step", "eval_step", "lr", "layers", "loss",
              "acc", "log.epoch", *WEIRD]:
        assert c in df.columns
    assert list(df.columns[:4]) == ["run_id", "version", "tstamp", "script"]
    assert len(df) == 2 * 14
    assert df["version"].notna().all() and df["script"].eq("train.py").all()


def test_arg_columns_are_per_run(proj):
    df = q(proj, "SELECT lr, count(DISTINCT run_id) AS runs, count(loss) AS n FROM logs GROUP BY lr ORDER BY lr")
    assert df.values.tolist() == [[0.01, 1, 8], [0.1, 1, 8]]


def test_raw_tables_are_queryable(proj):
    r = q(proj, "SELECT run_id, status, script FROM runs ORDER BY started")
    assert r["status"].tolist() == ["finished", "finished"] and r["script"].tolist() == ["train.py"] * 2
    rec = q(proj, "SELECT name, count(*) AS n FROM records WHERE name = 'loss' GROUP BY name")
    assert rec["n"][0] == 16
    assert len(q(proj, "SELECT * FROM versions")) >= 1
    # a CTE named logs is the user's, not ours
    assert q(proj, "WITH logs AS (SELECT 1 AS a) SELECT a FROM logs")["a"].tolist() == [1]
    # logs joined with a raw table
    j = q(proj, "SELECT r.status, count(*) AS n FROM logs l JOIN runs r USING (run_id)"
                " WHERE l.loss IS NOT NULL GROUP BY ALL")
    assert j.values.tolist() == [["finished", 16]]


def test_one_run_by_id(proj):
    rid = one_run(proj)
    df = q(proj, f"SELECT epoch, step, loss FROM logs WHERE run_id = '{rid}' ORDER BY epoch, step")
    assert len(df) == 8 and df["loss"].iloc[0] == 1.0


def test_no_duplicates_after_repeated_queries(proj):
    layout = locate(proj)
    with duckdb.connect(str(layout.catalog), read_only=True) as con:
        before = con.execute("SELECT count(*) FROM records").fetchone()[0]
    for _ in range(3):
        assert len(q(proj, "SELECT step, loss FROM logs")) == 16
    with duckdb.connect(str(layout.catalog), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM records").fetchone()[0] == before
        assert con.execute("SELECT count(*) - count(DISTINCT (run_id, seq)) FROM records").fetchone()[0] == 0


# -- read-only ------------------------------------------------------------------------------------------------


def _counts(proj):
    with duckdb.connect(str(locate(proj).catalog), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


@pytest.mark.parametrize("sql", [
    "DROP TABLE runs",
    "DELETE FROM records",
    "INSERT INTO runs (run_id) VALUES ('x')",
    "UPDATE runs SET status = 'x'",
    "CREATE TABLE t AS SELECT 1",
    "ATTACH 'other.db'",
    "COPY runs TO 'out.csv'",
    "SELECT 1; DROP TABLE runs",
    "SELEC loss FROM logs",
    "SELECT FROM WHERE",
    "",
])
def test_failed_and_write_statements_change_nothing(proj, sql):
    before = _counts(proj)
    with pytest.raises(QueryError) as info:
        q(proj, sql)
    assert "\n" not in str(info.value)
    assert _counts(proj) == before
    assert not (proj / "out.csv").exists()


def test_dataframe_shorthand(proj):
    from flordb.api import dataframe

    df = dataframe("lr", "acc", layout=locate(proj))
    assert list(df.columns) == ["run_id", "version", "tstamp", "epoch", "lr", "acc"]
    assert len(df) == 6
    assert sorted(df["lr"].unique().tolist()) == [0.01, 0.1]
    df = dataframe("loss", layout=locate(proj))
    assert list(df.columns) == ["run_id", "version", "tstamp", "epoch", "step", "loss"]
    assert len(df) == 16


# -- regressions found while writing these tests ------------------------------------------------------------


def test_sibling_branch_missing_in_some_epochs_adds_no_empty_rows(project):
    record(project, """
        import flordb as flor
        for epoch in flor.loop("epoch", range(3)):
            for step in flor.loop("step", range(2)):
                flor.log("loss", 1.0)
            if epoch == 0:
                for k in flor.loop("eval_step", range(2)):
                    flor.log("val_loss", 0.5)
            flor.log("acc", epoch / 10)
    """, check=True)
    df = q(project, "SELECT epoch, step, eval_step, loss, val_loss, acc FROM logs")
    assert len(df) == 3 * 2 + 2  # no (epoch, NULL, NULL) row for epochs 1 and 2: they have steps
    assert (df["step"].notna() | df["eval_step"].notna()).all()


def test_mixed_case_names(project):
    record(project, """
        import flordb as flor
        lr = flor.arg("learningRate", 0.1)
        for epoch in flor.loop("Epoch", range(2)):
            flor.log("valLoss", 1.0 + epoch)
            flor.log("loss", 1.0)
            flor.log("Loss", 3.0)
    """, check=True)
    df = q(project, 'SELECT "Epoch", valLoss, "learningRate" FROM logs ORDER BY epoch')
    assert df.values.tolist() == [[0, 1.0, 0.1], [1, 2.0, 0.1]]
    assert q(project, "SELECT avg(VALLOSS) AS a FROM logs")["a"][0] == 1.5
    assert {"Epoch", "valLoss", "learningRate"} <= set(q(project, "SELECT * FROM logs").columns)
    # names equal but for case are one identifier in SQL: the later one gets the log. prefix
    df = q(project, "SELECT * FROM logs")
    both = sorted(c for c in df.columns if c.lower() in ("loss", "log.loss"))
    assert len(both) == 2 and sorted(df[both[0]].tolist() + df[both[1]].tolist()) == [1.0, 1.0, 3.0, 3.0]
    with pytest.raises(UnknownColumnError) as info:
        q(project, "SELECT gradNorm FROM logs")
    assert info.value.names == ["gradNorm"]  # as typed, for hindsight to search the code


def test_user_cte_named_like_a_raw_table(project):
    record(project, "import flordb as flor\nfor e in flor.loop('epoch', range(2)):\n    flor.log('x', e)\n",
           check=True)
    assert q(project, "WITH records AS (SELECT 1 AS y) SELECT sum(x) AS s FROM logs")["s"][0] == 1
    assert q(project, "WITH runs AS (SELECT 1 AS y), args AS (SELECT 2 AS z) SELECT count(x) AS n FROM logs")["n"][0] == 2


def test_a_name_logged_twice_per_coordinate_keeps_the_last_value(project):
    """Duplicates at one coordinate (within an iteration, or a top-level loop entered twice)
    give one row with the last value, never extra rows."""
    record(project, """
        import flordb as flor
        for e in flor.loop("epoch", range(2)):
            for s in flor.loop("step", range(3)):
                flor.log("x", 1.0)
                flor.log("x", 10.0 * e + s)
            flor.log("once", float(e))
        for e in flor.loop("epoch", range(2)):
            flor.log("again", 100.0 + e)
    """, check=True)
    df = q(project, "SELECT epoch, step, x FROM logs ORDER BY epoch, step")
    assert df["x"].tolist() == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
    df = q(project, "SELECT epoch, again FROM logs WHERE again IS NOT NULL ORDER BY epoch")
    assert df["again"].tolist() == [100.0, 101.0]
    with open_catalog(locate(project)) as cat:
        dups = dict(cat.execute("SELECT name, max(dups) FROM log_names GROUP BY name").fetchall())
    assert dups["x"] > 0 and dups["once"] > 0  # the reloop marks every name of the run


def test_unique_names_are_read_without_a_pivot(project):
    record(project, """
        import flordb as flor
        for e in flor.loop("epoch", range(2)):
            for s in flor.loop("step", range(2)):
                flor.log("loss", float(s))
    """, check=True)
    from flordb.sql.engine import prepare

    with open_catalog(locate(project)) as cat:
        cat.ingest()
        plan, _ = prepare(cat, "SELECT epoch, step, loss FROM logs")
    assert "ARG_MAX" not in plan.sql.upper()
    assert q(project, "SELECT count(loss) AS n FROM logs")["n"][0] == 4
