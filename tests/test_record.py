"""The record side: run lifecycle, args, loops, values, and the user's git state."""

from __future__ import annotations

import json
import math
import sys

import pytest

from conftest import REPO_ROOT, git, git_state, q, record, write_script
from flordb.record.args import cast, take_overrides

TINY = """
import flordb as flor
lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(2)):
        flor.log("loss", 1.0 / (1 + epoch * 2 + step))
    flor.log("acc", epoch / 10)
print("done")
"""


def runs(project):
    return q(project, "SELECT run_id, status, error FROM runs ORDER BY started, run_id")


# -- git state -------------------------------------------------------------------------


def test_git_state_unchanged_clean(project):
    write_script(project, TINY)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "add script")
    before = git_state(project)
    record(project, "train.py", check=True)
    assert git_state(project) == before
    assert runs(project)["status"].tolist() == ["finished"]


def test_git_state_unchanged_with_uncommitted_and_untracked(project):
    write_script(project, TINY)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "add script")
    (project / "README.md").write_text("modified, unstaged\n")
    (project / "staged.txt").write_text("staged only\n")
    git(project, "add", "staged.txt")
    (project / "staged.txt").write_text("staged, then modified again\n")
    (project / "notes.txt").write_text("untracked\n")
    (project / "sub").mkdir()
    (project / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (project / ".gitignore").write_text("*.log\n")
    (project / "ignored.log").write_text("ignored\n")
    before = git_state(project)
    assert before["status"]  # really dirty
    record(project, "train.py", check=True)
    after = git_state(project)
    assert after == before
    # the store is not shown to the user as an untracked directory
    assert ".flordb" not in after["status"]


def test_git_state_unchanged_on_detached_head(project):
    write_script(project, TINY)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "add script")
    git(project, "checkout", "-q", "--detach")
    before = git_state(project)
    assert before["branch"] == ""
    record(project, "train.py", check=True)
    assert git_state(project) == before


# -- args --------------------------------------------------------------------------------

ARGPARSE = """
import argparse, json, sys
import flordb as flor
parser = argparse.ArgumentParser()
parser.add_argument("--name", default="none")
opts = parser.parse_args()             # would fail on --kwargs if flordb left it in argv
lr = flor.arg("lr", 0.1)
epochs = flor.arg("epochs", 3)
debug = flor.arg("debug", False)
tag = flor.arg("tag", "a")
for e in flor.loop("epoch", range(epochs)):
    flor.log("x", e)
print(json.dumps({"name": opts.name, "lr": lr, "epochs": epochs, "debug": debug, "tag": tag,
                  "argv": sys.argv[1:]}))
"""


def test_kwargs_cast_and_hidden_from_argparse(project):
    p = record(project, ARGPARSE, "--name", "n1", "--kwargs", "lr=0.5", "epochs=2", "debug=true", "tag=b",
               check=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"name": "n1", "lr": 0.5, "epochs": 2, "debug": True, "tag": "b", "argv": ["--name", "n1"]}
    df = q(project, "SELECT DISTINCT lr, epochs, debug, tag FROM logs")
    assert df.shape[0] == 1
    row = df.iloc[0]
    assert row["lr"] == 0.5 and row["epochs"] == 2 and bool(row["debug"]) is True and row["tag"] == "b"
    assert str(df["epochs"].dtype) == "int64"
    assert q(project, "SELECT count(x) AS n FROM logs")["n"][0] == 2


def test_kwargs_bad_cast_falls_back_with_warning(project):
    p = record(project, ARGPARSE, "--kwargs", "epochs=abc", check=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["epochs"] == 3
    assert "epochs" in p.stderr and "flordb" in p.stderr


def test_take_overrides_unit():
    argv = ["train.py", "--a", "1", "--kwargs", "lr=0.1", "n=3", "--b", "x", "--kwargs=k=v"]
    assert take_overrides(argv) == {"lr": "0.1", "n": "3", "k": "v"}
    assert argv == ["train.py", "--a", "1", "--b", "x"]
    argv = ["t.py", "pos"]
    assert take_overrides(argv) == {} and argv == ["t.py", "pos"]


def test_run_ids_sort_by_start_time_within_one_second(monkeypatch):
    """Runs started in the same second still sort by start (ORDER BY run_id is start order)."""
    from flordb.record import run as run_mod
    clock = iter([1700000000.004, 1700000000.250, 1700000000.999, 1700000001.0])
    monkeypatch.setattr(run_mod.time, "time", lambda: next(clock))
    ids = [run_mod.new_run_id() for _ in range(4)]
    assert len({i[:15] for i in ids[:3]}) == 1  # the same second
    assert ids == sorted(ids), ids
    assert all(len(i) == 22 for i in ids), ids


def test_cast_unit():
    assert cast("0.01", 1e-3) == 0.01 and isinstance(cast("1", 1.0), float)
    assert cast("7", 3) == 7 and isinstance(cast("7", 3), int)
    assert cast("false", True) is False and cast("1", False) is True
    assert cast("hello", "x") == "hello"
    assert cast("[1, 2]", None) == [1, 2]
    with pytest.raises(ValueError):
        cast("abc", 3)
    with pytest.raises(ValueError):
        cast("maybe", True)


# -- lifecycle ------------------------------------------------------------------------------


def test_failed_run_records_exception(project):
    p = record(project, """
        import flordb as flor
        for e in flor.loop("epoch", range(5)):
            flor.log("x", e)
            if e == 2:
                raise ValueError("boom at two")
    """)
    assert p.returncode != 0 and "boom at two" in p.stderr
    r = runs(project)
    assert r["status"].tolist() == ["failed"]
    assert "ValueError" in r["error"][0] and "boom at two" in r["error"][0]
    # records up to and including the failing iteration's flush are kept
    assert sorted(q(project, "SELECT epoch FROM logs WHERE x IS NOT NULL")["epoch"]) == [0, 1, 2]


def test_commit_ends_run_and_next_call_starts_new_one(project):
    record(project, """
        import flordb as flor
        for e in flor.loop("epoch", range(2)):
            flor.log("x", e)
        flor.commit()
        for e in flor.loop("epoch", range(3)):
            flor.log("x", e * 10)
        flor.commit()
    """, check=True)
    r = runs(project)
    assert len(r) == 2 and set(r["status"]) == {"finished"}
    df = q(project, "SELECT run_id, count(*) AS n, sum(x) AS s FROM logs GROUP BY run_id ORDER BY n")
    assert df["n"].tolist() == [2, 3] and df["s"].tolist() == [1, 30]


def test_loops_over_generators_and_iterables_without_len(project):
    record(project, """
        import flordb as flor
        class NoLen:
            def __iter__(self):
                return iter("abc")
        def gen(n):
            for i in range(n):
                yield i * 2
        for e in flor.loop("epoch", gen(2)):
            for s in flor.loop("step", NoLen()):
                flor.log("item", s)
                flor.log("e", e)
    """, check=True)
    df = q(project, "SELECT epoch, step, item, e FROM logs ORDER BY epoch, step")
    assert df["epoch"].tolist() == [0, 0, 0, 1, 1, 1]
    assert df["step"].tolist() == [0, 1, 2] * 2
    assert df["item"].tolist() == list("abc") * 2
    assert df["e"].tolist() == [0, 0, 0, 2, 2, 2]


def test_disabled_records_nothing(project):
    p = record(project, TINY, env={"FLORDB_DISABLE": "1"})
    assert p.returncode == 0 and p.stdout.strip() == "done"
    seg = project / ".flordb" / "segments"
    assert not seg.exists() or not any(seg.iterdir())


# -- values ---------------------------------------------------------------------------------------


def test_problematic_values_never_raise_and_warn_once(project):
    p = record(project, """
        import math
        import numpy as np
        import flordb as flor

        class BadRepr:
            def __repr__(self):
                raise RuntimeError("no repr for you")

        class Plain:
            def __repr__(self):
                return "Plain()"

        for e in flor.loop("epoch", range(3)):
            flor.log("obj", Plain())
            flor.log("obj2", Plain())
            flor.log("arr", np.arange(3))
            flor.log("np_float", np.float32(0.5))
            flor.log("np_int", np.int64(7))
            flor.log("big", 2 ** 80)
            flor.log("nested", {"a": [1, float("nan")], "b": Plain()})
            flor.log("bytes", b"\\x00\\xff")
            flor.log("bad", BadRepr())
            flor.log("loss", 1.0 / (e + 1))
        print("survived")
    """)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "survived"
    assert p.stderr.count("'obj'") == 1 and p.stderr.count("'obj2'") == 1
    # the good values logged next to a bad one are not lost
    df = q(project, "SELECT epoch, loss, obj, np_float, np_int FROM logs ORDER BY epoch")
    assert df["loss"].tolist() == [1.0, 0.5, pytest.approx(1 / 3)]
    assert df["obj"].tolist() == ["Plain()"] * 3
    assert df["np_float"].tolist() == [0.5] * 3
    assert df["np_int"].tolist() == [7] * 3


def test_logged_value_is_the_value_at_log_time(project):
    """A list logged and then mutated must keep what it held when flor.log was called."""
    record(project, """
        import flordb as flor
        hist = []
        for e in flor.loop("epoch", range(2)):
            for s in flor.loop("step", range(3)):
                hist.append(s)
                flor.log("hist", hist)
            hist.clear()
    """, check=True)
    df = q(project, "SELECT epoch, step, hist FROM logs ORDER BY epoch, step")
    got = [json.loads(v) if isinstance(v, str) else v for v in df["hist"]]
    assert got == [[0], [0, 1], [0, 1, 2]] * 2


def test_run_in_progress_is_queryable_up_to_last_flush(project, tmp_path):
    marker, release = tmp_path / "at-epoch-2", tmp_path / "release"
    from conftest import spawn
    import time

    proc = spawn(project, f"""
        import os, time
        import flordb as flor
        for e in flor.loop("epoch", range(4)):
            if e == 2:
                open({str(marker)!r}, "w").close()
                while not os.path.exists({str(release)!r}):
                    time.sleep(0.02)
            flor.log("x", e)
    """)
    try:
        deadline = time.time() + 30
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.02)
        assert sorted(q(project, "SELECT epoch FROM logs WHERE x IS NOT NULL")["epoch"]) == [0, 1]
        assert runs(project)["status"].tolist() == ["running"]
        release.touch()
        assert proc.wait(30) == 0
    finally:
        release.touch()
        proc.kill() if proc.poll() is None else None
    assert sorted(q(project, "SELECT epoch FROM logs")["epoch"]) == [0, 1, 2, 3]
    assert runs(project)["status"].tolist() == ["finished"]


# -- the example ---------------------------------------------------------------------------------


def test_mlp_example_end_to_end(project):
    pytest.importorskip("torch")
    script = REPO_ROOT / "examples" / "mlp" / "train.py"
    before = git_state(project)
    record(project, script, "--kwargs", "epochs=2", check=True, timeout=300)
    record(project, script, "--kwargs", "epochs=2", "lr=0.01", check=True, timeout=300)
    assert git_state(project) == before
    df = q(project, "SELECT lr, epoch, avg(loss) AS loss, max(acc) AS acc, count(*) AS n"
                    " FROM logs GROUP BY ALL ORDER BY ALL")
    assert df["lr"].tolist() == [0.001, 0.001, 0.01, 0.01]
    assert df["epoch"].tolist() == [0, 1, 0, 1]
    assert (df["n"] == 24).all()  # 1536 / 64 steps per epoch
    assert ((df["acc"] > 0) & (df["acc"] <= 1)).all()
    assert all(math.isfinite(x) for x in df["loss"])
    only = q(project, "SELECT DISTINCT run_id FROM logs WHERE lr > 0.005")
    assert len(only) == 1


def test_unwritable_store_never_crashes_training(project, tmp_path):
    """FLORDB_HOME pointing at a file: recording is off, reported once, the script completes."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    proc = record(project, """
        import flordb as flor
        lr = flor.arg("lr", 0.1)
        total = 0
        for e in flor.loop("epoch", range(3)):
            total += flor.log("x", e)
        print("done", lr, total)
    """, "--kwargs", "lr=0.5", env={"FLORDB_HOME": str(blocker / "store")})
    assert proc.returncode == 0, proc.stderr
    assert "done 0.5 3" in proc.stdout
    assert proc.stderr.count("recording is off") == 1


def test_disabled_still_applies_kwargs_overrides(project):
    proc = record(project, """
        import flordb as flor
        print(flor.arg("lr", 0.1), flor.arg("epochs", 2))
    """, "--kwargs", "lr=0.5", env={"FLORDB_DISABLE": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "0.5 2"


def test_a_run_that_never_uses_pandas_does_not_load_it(project):
    """pyarrow would import pandas at the first segment write; a training process that never did stays without it,
    and pandas still works when the script imports it afterwards."""
    script = (
        "import sys\n"
        "import flordb as flor\n"
        "for epoch in flor.loop('epoch', range(2)):\n"
        "    flor.log('loss', 1.0 / (epoch + 1))\n"
        "print('pandas loaded:', 'pandas' in sys.modules)\n"
        "import pandas as pd, pyarrow as pa\n"
        "print(pa.Table.from_pandas(pd.DataFrame({'a': [1, 2]})).num_rows, pa.array(pd.Series([1.5])).type)\n"
    )
    out = record(project, script, check=True)
    assert out.stdout.splitlines() == ["pandas loaded: False", "2 double"]
    assert list(q(project, "SELECT epoch, loss FROM logs ORDER BY epoch").itertuples(index=False)) == [(0, 1.0), (1, 0.5)]
