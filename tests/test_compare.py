"""Cross-run comparison (issue 5): ``flordb compare`` and ``flordb.compare``.

Runs are recorded once per module into one project: the MLP example, its
refactored twin, the buggy variant (3 epochs each, the bug starts at epoch 2),
and two tiny torch-free scripts that log names at different loop depths.
"""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import REPO_ROOT, make_project, record
from flordb.cli.compare_cmd import compare as compare_cmd
from flordb.comparison import align, check, compare
from flordb.errors import CompareError
from flordb.store.layout import locate

DEPTH_A = """\
import flordb as flor

epochs = flor.arg("epochs", 3)
for epoch in flor.loop("epoch", range(epochs)):
    for step in flor.loop("step", range(4)):
        flor.log("loss", 1.0 / (1 + epoch * 4 + step))
    flor.log("acc", 0.5 + 0.1 * epoch)
    flor.log("only_a", epoch)
"""

# The same values, but the inner loop is called "batch", the metric "train_loss",
# and acc is logged on every batch instead of once per epoch.
DEPTH_B = """\
import flordb as flor

for epoch in flor.loop("epoch", range(3)):
    for batch in flor.loop("batch", range(4)):
        flor.log("train_loss", 1.0 / (1 + epoch * 4 + batch))
        flor.log("acc", 0.5 + 0.1 * epoch)
    flor.log("only_b", epoch)
"""


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    """A project with six recorded runs; returns (path, {label: run_id})."""
    mp = pytest.MonkeyPatch()
    mp.delenv("FLORDB_HOME", raising=False)
    mp.delenv("FLORDB_DISABLE", raising=False)
    root = make_project(tmp_path_factory.mktemp("compare") / "proj")
    shutil.copy(REPO_ROOT / "examples" / "mlp" / "train.py", root / "train.py")
    for name in ("train_refactored.py", "train_buggy.py"):
        shutil.copy(REPO_ROOT / "examples" / "refactor" / name, root / name)
    (root / "depth_a.py").write_text(DEPTH_A)
    (root / "depth_b.py").write_text(DEPTH_B)
    runs = [
        ("mlp", "train.py", ["--kwargs", "epochs=3"]),
        ("refactored", "train_refactored.py", ["--kwargs", "epochs=3"]),
        ("buggy", "train_buggy.py", ["--kwargs", "epochs=3"]),
        ("depth_a", "depth_a.py", []),
        ("depth_b", "depth_b.py", []),
        ("depth_a2", "depth_a.py", ["--kwargs", "epochs=2"]),
    ]
    ids = {}
    from flordb.api import query

    for label, script, args in runs:
        record(root, root / script, *args, check=True)
        df = query("SELECT run_id FROM runs ORDER BY started DESC, run_id DESC LIMIT 1", replay="no",
                   layout=locate(root))
        ids[label] = df["run_id"][0]
    assert len(set(ids.values())) == len(runs)
    yield root, ids
    mp.undo()


@pytest.fixture
def in_proj(proj, monkeypatch):
    root, ids = proj
    monkeypatch.chdir(root)
    monkeypatch.delenv("FLORDB_HOME", raising=False)
    return root, ids


def cli(*args):
    return CliRunner().invoke(compare_cmd, list(args), catch_exceptions=False)


def api(root, a, b, **kw):
    return compare(a, b, layout=locate(root), **kw)


# ---------------------------------------------------------------- the refactor example


def test_refactored_agrees_within_tolerance(in_proj):
    root, ids = in_proj
    res = cli(ids["mlp"], ids["refactored"])
    assert res.exit_code == 0, res.output
    assert "Verdict: agree" in res.stdout
    assert "loss" in res.stdout and "acc" in res.stdout

    c = api(root, ids["mlp"], ids["refactored"])
    assert c.agree and c.first_divergence is None
    assert [n for n, _ in c.names] == ["loss", "acc"]  # in the order the run first logged them
    loss = c.summary.set_index("name").loc["loss"]
    assert loss["aligned"] == 3 * 24 and loss["only_a"] == 0 and loss["only_b"] == 0
    assert 0 < loss["max_abs_diff"] < 1e-5  # computed another way: not bit-identical, but close
    assert {"name", "epoch", "step", "a", "b", "abs_diff", "rel_diff"} <= set(c.frame.columns)
    # with a tolerance tighter than float32 rounding, the two ways of computing disagree
    assert not api(root, ids["mlp"], ids["refactored"], rtol=0, atol=0).agree


def test_buggy_diverges_where_the_bug_starts(in_proj):
    root, ids = in_proj
    res = cli(ids["mlp"], ids["buggy"])
    assert res.exit_code == 1, res.output
    assert "first at loss (epoch 2, step 1)" in res.stdout

    c = api(root, ids["mlp"], ids["buggy"])
    d = c.first_divergence
    assert not c.agree
    # the LR changes in the first update of epoch 2; loss at step 0 is computed before that update
    assert (d.name, d.coordinates) == ("loss", {"epoch": 2, "step": 1})
    row = c.frame[(c.frame["name"] == "loss") & (c.frame["epoch"] == 2) & (c.frame["step"] == 1)].iloc[0]
    assert (d.a, d.b) == (row["a"], row["b"]) and d.a != d.b
    early = c.frame[(c.frame["name"] == "loss") & ((c.frame["epoch"] < 2) | (c.frame["step"] == 0))]
    assert early["match"].all()


def test_predicate_sides_and_python_api(in_proj):
    root, ids = in_proj
    import flordb

    c = flordb.compare("script = 'train.py' AND epochs = 3", "script = 'train_refactored.py'", on=["loss"])
    assert (c.a.run_id, c.b.run_id) == (ids["mlp"], ids["refactored"])
    assert c.agree and [n for n, _ in c.names] == ["loss"]
    c = api(root, ids["mlp"][:-2], "script = 'train_buggy.py'", on="acc")
    assert c.first_divergence.coordinates == {"epoch": 2}


# ---------------------------------------------------------------- alignment


def test_different_loop_depths_align_on_shared_coordinates(in_proj):
    root, ids = in_proj
    c = api(root, ids["depth_a"], ids["depth_b"], on=["loss", "acc", "only_a"], map={"loss": "train_loss"})
    assert c.agree, c.summary
    s = c.summary.set_index("name")
    # loss: epoch/step vs epoch/batch -> paired in order within each epoch
    assert s.loc["loss", "name_b"] == "train_loss" and s.loc["loss", "aligned"] == 12
    # acc: per epoch on A, per batch on B -> A's epoch value against each of B's batches
    assert s.loc["acc", "aligned"] == 12 and s.loc["acc", "only_a"] == 0 and s.loc["acc", "only_b"] == 0
    # a name missing on one side is reported, not an error
    assert s.loc["only_a", "status"] == "only in A" and s.loc["only_a", "only_a"] == 3
    assert s.loc["only_a", "aligned"] == 0

    res = cli(ids["depth_a"], ids["depth_b"], "--map", "loss=train_loss")
    assert res.exit_code == 0, res.output
    assert "loss = train_loss" in res.stdout and "acc" in res.stdout
    assert "only_a" not in res.stdout  # default: only names both sides log


def test_rows_on_one_side_are_counted(in_proj):
    root, ids = in_proj
    c = api(root, ids["depth_a"], ids["depth_a2"])
    s = c.summary.set_index("name")
    assert c.agree
    assert (s.loc["loss", "aligned"], s.loc["loss", "only_a"], s.loc["loss", "only_b"]) == (8, 4, 0)
    assert s.loc["acc", "only_a"] == 1
    res = cli(ids["depth_a"], ids["depth_a2"], "--on", "loss")
    assert res.exit_code == 0 and "only A" in res.stdout
    res = cli(ids["depth_a"], ids["depth_a2"], "--on", "loss", "--strict")
    assert res.exit_code == 1 and "--strict" in res.stdout


def _side(values, loops=("epoch", "step")):
    rows = [(*coord, v) for coord, v in values]
    return pd.DataFrame(rows, columns=[*loops, "value"])


def test_nan_equals_nan_only_when_both_are_nan():
    a = _side([((0, 0), 1.0), ((0, 1), math.nan), ((0, 2), math.nan), ((0, 3), 2.0), ((1, 0), math.inf)])
    b = _side([((0, 0), 1.0), ((0, 1), math.nan), ((0, 2), 3.0), ((0, 3), math.nan), ((1, 0), math.inf)])
    out = check(align(a, b), rtol=1e-5, atol=1e-8)
    assert list(out["match"]) == [True, True, False, False, True]
    assert list(out["abs_diff"].fillna(-1)) == [0.0, 0.0, -1, -1, 0.0]


def test_align_keeps_one_sided_rows_and_tolerance_semantics():
    a = _side([((0, 0), 1.0), ((0, 1), 100.0), ((0, 2), 5.0)])
    b = _side([((0, 0), 1.0 + 1e-9), ((0, 1), 100.0 + 5e-4), ((1, 0), 7.0)])
    out = check(align(a, b), rtol=1e-5, atol=1e-8)
    by = {(r.epoch, r.step): r for r in out.itertuples()}
    assert by[(0, 0)].match and by[(0, 1)].match  # |a-b| <= atol + rtol*|b|
    assert by[(0, 2)].side == "a" and by[(1, 0)].side == "b" and pd.isna(by[(1, 0)].match)
    assert by[(0, 1)].rel_diff == pytest.approx(5e-4 / (100.0 + 5e-4))
    strict = check(align(a, b), rtol=1e-10, atol=0)
    assert list(strict["match"].iloc[:2]) == [False, False]
    # one side deeper: the shallow value is compared at each deeper coordinate
    shallow = pd.DataFrame({"epoch": [0, 1], "value": [0.5, 0.6]})
    deep = _side([((0, 0), 0.5), ((0, 1), 0.5), ((1, 0), 0.6)])
    out = check(align(shallow, deep), 1e-5, 1e-8)
    assert list(out.columns[:2]) == ["epoch", "step"] and len(out) == 3 and out["match"].all()


# ---------------------------------------------------------------- bad input


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_exits_2_with_one_line(in_proj):
    root, ids = in_proj
    _one_line_error(cli("no-such-run", ids["mlp"]), "no run id or version starts with 'no-such-run'")
    # every run id starts with the year: ambiguous, and the runs are named
    _one_line_error(cli(ids["mlp"][:2], ids["mlp"]), "selects 6 runs", ids["buggy"], "narrow it")
    # a predicate selecting several runs
    _one_line_error(cli("script = 'depth_a.py'", ids["depth_b"]), "selects 2 runs", ids["depth_a2"])
    _one_line_error(cli(ids["mlp"], ids["refactored"], "--on", "grad_norm"), "'grad_norm' was never recorded")
    _one_line_error(cli(ids["mlp"], ids["refactored"], "--rtol", "-1e-5"), "--rtol must be a non-negative")
    _one_line_error(cli(ids["mlp"], ids["refactored"], "--atol", "-1"), "--atol must be a non-negative")
    _one_line_error(cli(ids["mlp"], ids["refactored"], "--map", "loss"), "expected NAME_A=NAME_B")
    _one_line_error(cli("lr >", ids["mlp"]), "side A")
    _one_line_error(cli("no_such_arg = 1", ids["mlp"]), "unknown column 'no_such_arg'")
    _one_line_error(cli(ids["mlp"], ids["refactored"], "--on", " , "), "--on names no log name")
    with pytest.raises(CompareError):
        api(root, ids["mlp"], ids["refactored"], rtol=float("nan"))


def test_name_logged_by_current_code_points_to_hindsight(in_proj):
    root, ids = in_proj
    script = root / "depth_a.py"
    original = script.read_text()
    try:
        script.write_text(original.replace('    flor.log("only_a", epoch)\n',
                                           '    flor.log("only_a", epoch)\n    flor.log("lr_now", 0.1)\n'))
        res = cli(ids["depth_a"], ids["depth_a2"], "--on", "lr_now")
        _one_line_error(res, "'lr_now' was never recorded", "the current code logs it (depth_a.py:9)",
                        "flordb replay lr_now")
        # with --yes the comparison replays the name into both runs, as a query would, and compares
        res = cli(ids["depth_a"], ids["depth_a2"], "--on", "lr_now", "--yes")
        assert res.exit_code == 0, res.output
        assert "lr_now" in res.stdout and "agree" in res.stdout
    finally:
        script.write_text(original)


# ---------------------------------------------------------------- output


def test_json_format_parses(in_proj):
    root, ids = in_proj
    res = cli(ids["mlp"], ids["buggy"], "--format", "json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["agree"] is False
    assert doc["a"]["run_id"] == ids["mlp"] and doc["b"]["run_id"] == ids["buggy"]
    assert doc["first_divergence"]["coordinates"] == {"epoch": 2, "step": 1}
    assert {n["name"]: n["status"] for n in doc["names"]} == {"loss": "diverge", "acc": "diverge"}
    ok = json.loads(cli(ids["mlp"], ids["refactored"], "-f", "json").stdout)
    assert ok["agree"] is True and ok["first_divergence"] is None


def test_plot_is_written_and_readable(in_proj, tmp_path):
    root, ids = in_proj
    out = tmp_path / "loss.png"
    res = cli(ids["mlp"], ids["buggy"], "--on", "loss", "--plot", str(out))
    assert res.exit_code == 1
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    c = api(root, ids["mlp"], ids["buggy"])
    fig = c.plot("loss")
    assert fig._suptitle is not None and ids["mlp"] in fig._suptitle.get_text()
    top, bottom = fig.axes
    assert "loss" in top.get_title() and "epoch 2, step 1" in top.get_title()
    for ax in (top, bottom):
        assert ax.get_xlabel() and ax.get_ylabel()
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert any(ids["mlp"] in t and c.a.version[:7] in t for t in legend)
    assert any(ids["buggy"] in t for t in legend)
    assert any("first divergence" in t for t in legend)
    assert len(c.plot().axes) == 4  # every numeric compared name
    with pytest.raises(CompareError):
        c.plot("grad_norm")
