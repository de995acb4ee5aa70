"""Issue 11, failures 3, 4, 6 and 9: the record path never raises and loses nothing;
every name is reachable; nothing FlorDB stores for itself is unpickled.
"""

from __future__ import annotations

import io
import math
import pickle
import random
import sys
import time

import numpy as np
import pytest

from conftest import q, record
from flordb.errors import StoreError
from flordb.sql.schema import unique_name
from flordb.record import state
from flordb.record.context import Blocks
from flordb.store.layout import locate
from flordb.store.segments import SegmentWriter, decode, encode, write_json_atomic


class GetattrRaises:
    def __getattr__(self, key):
        raise RuntimeError("boom")


class ReprRaises(GetattrRaises):
    def __repr__(self):
        raise RuntimeError("no repr")


class ReprNotStr:
    def __repr__(self):
        return 5  # type: ignore[return-value]


class ItemRaises:
    ndim = 0

    def item(self):
        raise ValueError("no item")


class LenRaises(list):
    def __iter__(self):
        raise RuntimeError("no iter")


def _deep(n):
    out: list = []
    for _ in range(n):
        out = [out]
    return out


HOSTILE_VALUES = [
    GetattrRaises(), ReprRaises(), ReprNotStr(), ItemRaises(), LenRaises([1]), [1, GetattrRaises()],
    {"a": GetattrRaises()}, (ReprRaises(),), "x\udc80y", ["\udc80"], {"\ud800": 1}, _deep(5000),
    2**63 - 1, -(2**63), 2**53 + 1, 2**100 + 1, -(2**100), 2**200 + 1, float("nan"), float("inf"),
    np.int64(2**62 + 1), np.float32(0.5), np.array(3), np.array([1, 2]), b"\xff\x00", complex(1, 2),
    object(), type, print, Ellipsis, range(3), {1, 2}, None, True,
]


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=lambda v: type(v).__name__)
def test_encode_never_raises_and_its_record_never_costs_a_neighbour(value, tmp_path):
    vt, num, txt = encode("x", value)
    assert isinstance(vt, int) and (num is None or isinstance(num, float)) and (txt is None or isinstance(txt, str))
    blocks = Blocks()
    b = blocks.open(("epoch",), ())
    logs = [("good", 1.0, b), ("x", encode("x", value), b), ("x\udc80", 2.0, b), ("after", 3.0, b)]
    path = SegmentWriter(tmp_path).write(logs, [("arg\udc80", "v\udc80")], [], blocks.table)
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    got = {r["name"]: decode(r["vtype"], r["num"], r["txt"]) for r in rows if r["kind"] == "log"}
    assert got["good"] == 1.0 and got["after"] == 3.0 and got["x\\udc80"] == 2.0
    assert "x" in got


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), 2**53 + 1, 2**100 + 1, -(2**126), 2**200 + 1, 7])
def test_integers_are_stored_exactly(value):
    assert decode(*encode("n", value)) in (value, str(value))
    assert str(decode(*encode("n", value))) == str(value)


HOSTILE_SCRIPT = '''
import flordb as flor

class Bad:
    def __getattr__(self, k):
        raise RuntimeError("boom")

for epoch in flor.loop("epoch", range(3)):
    flor.log("before", 1.0)
    flor.log("bad", Bad())
    flor.log("badlist", [1, Bad()])
    flor.log("sur\\udc80", 2.0)
    flor.log(5, 3.0)
    flor.log("text", "x\\udc80y")
    flor.log(None, 1)
    flor.log("", 2.0)
    flor.log(("tuple", "name"), 4.0)
    flor.log("big", 2**63 - 1)
    flor.log("b53", 2**53 + 1)
    flor.log("huge", 2**100 + 1)
    flor.log("Loss", 1.0)
    flor.log("loss", 2.0)
    flor.log("LOSS", 3.0)
    flor.log("log.epoch", 5.0)
    flor.log("epoch", 6.0)
    assert flor.log("returned", [1, 2]) == [1, 2]
    flor.log("after", float(epoch))
'''


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    from conftest import make_project

    root = make_project(tmp_path_factory.mktemp("rec") / "proj")
    proc = record(root, HOSTILE_SCRIPT)
    return root, proc


def test_flor_log_never_raises_nor_loses_a_neighbour(hostile_run):
    root, proc = hostile_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "lost" not in proc.stderr
    df = q(root, "SELECT epoch, before, after, bad, badlist, text, \"5\" AS five FROM logs ORDER BY epoch")
    assert df["before"].tolist() == [1.0] * 3 and df["after"].tolist() == [0.0, 1.0, 2.0]
    assert df["bad"].str.contains("Bad object").all() and df["badlist"].str.startswith("[1, ").all()
    assert df["text"].tolist() == ["x\\udc80y"] * 3 and df["five"].tolist() == [3.0] * 3
    # One warning per name, not per call; None and "" refused with a warning.
    assert proc.stderr.count("'bad'") == 1
    assert "flor.log(None, ...) ignored" in proc.stderr and "flor.log('', ...) ignored" in proc.stderr


def test_integers_come_back_exactly(hostile_run):
    root, _ = hostile_run
    df = q(root, "SELECT big, b53, CAST(huge AS VARCHAR) AS huge, typeof(big) AS t FROM logs LIMIT 1")
    assert int(df["big"][0]) == 2**63 - 1 and int(df["b53"][0]) == 2**53 + 1
    assert df["huge"][0] == str(2**100 + 1) and df["t"][0] == "BIGINT"


def test_every_name_is_reachable_by_one_unique_column(hostile_run):
    root, _ = hostile_run
    df = q(root, "SELECT * FROM logs ORDER BY epoch")  # never fails because of a name
    cols = list(df.columns)
    assert len({c.lower() for c in cols}) == len(cols)
    losses = sorted(df.loc[0, c] for c in cols if c.lower().replace("log.", "").split("#")[0] == "loss")
    assert losses == [1.0, 2.0, 3.0]  # Loss, loss and LOSS all reachable
    assert df["epoch"].tolist() == [0, 1, 2]
    epochs_logged = sorted(df.loc[0, c] for c in cols if c.startswith("log.") and "epoch" in c)
    assert epochs_logged == [5.0, 6.0]  # the log "epoch" and the log "log.epoch"
    assert "sur\\udc80" in cols and "('tuple', 'name')" in cols


@pytest.mark.parametrize("name, taken, expected", [
    ("loss", set(), "loss"),
    ("Loss", {"loss"}, "log.Loss"),
    ("LOSS", {"loss", "log.loss"}, "log.LOSS#2"),
    ("", set(), "log."),
    ("epoch", {"epoch"}, "log.epoch"),
    ("log.epoch", {"epoch", "log.epoch"}, "log.log.epoch"),
])
def test_unique_name(name, taken, expected):
    assert unique_name(name, "log.", taken) == expected


def test_an_empty_name_already_in_the_store_does_not_break_select_star(project):
    layout = locate(project)
    d = layout.run_dir("r1")
    d.mkdir(parents=True)
    write_json_atomic(d / "run.json", {"run_id": "r1", "started": time.time(), "pid": 0, "host": "x"})
    blocks = Blocks()
    e = blocks.open(("epoch",), ())
    SegmentWriter(d).write([("", 1.0, e), ("loss", 2.0, e)], [], [], blocks.table)
    df = q(project, "SELECT * FROM logs")
    assert df["loss"].tolist() == [2.0] and df["log."].tolist() == [1.0]


# -- failure 6: no unpickling of untrusted bytes -------------------------------------------------------


class _Planted:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _StateDictObject:
    def __init__(self):
        self.w = [1.0, 2.0]

    def state_dict(self):
        return {"w": list(self.w)}

    def load_state_dict(self, sd):
        self.w = list(sd["w"])


@pytest.mark.parametrize("fmt, live", [
    (state.FMT_PICKLE, "state_dict_object"),
    (state.FMT_PICKLE, "numpy"),
    (state.FMT_PICKLED_SD, "state_dict_object"),
    (state.FMT_TORCH, "state_dict_object"),
    (state.FMT_RNG, None),
])
def test_planted_pickle_never_runs(fmt, live, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Planted(marker))
    if fmt == state.FMT_TORCH:
        pytest.importorskip("torch")
    objects = {"state_dict_object": {"m": _StateDictObject()}, "numpy": {"m": np.zeros(3)}, None: {}}[live]
    blobs = {"m": (fmt, payload)} if live else {}
    if fmt == state.FMT_RNG:
        blobs[state.RNG_NAME] = (fmt, payload)
    with pytest.raises(StoreError):
        state.restore(objects, blobs)
    assert not marker.exists()


def test_rng_and_state_dicts_round_trip_without_pickle():
    rng_before = (random.random(), np.random.rand())
    copy = state.capture({"m": _StateDictObject(), "a": np.arange(4.0)})
    blobs = state.serialize(copy)
    assert blobs[state.RNG_NAME][1].startswith(b"{")  # JSON, not a pickle
    expected = (random.random(), np.random.rand())
    live = {"m": _StateDictObject(), "a": np.zeros(4)}
    live["m"].w = [9.0]
    state.restore(live, blobs)
    assert (random.random(), np.random.rand()) == expected != rng_before
    assert live["m"].w == [1.0, 2.0] and live["a"].tolist() == [0.0, 1.0, 2.0, 3.0]


# -- failure 9: the numpy start-up race -------------------------------------------------------------

RACE_SCRIPT = '''
import flordb as flor
state = {"w": 1}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(2)):
        state["w"] += 1
        flor.log("w", state["w"])
import sys
print("numpy" in sys.modules)
'''


def test_first_checkpoint_is_there_when_the_script_never_imports_numpy(project):
    for _ in range(3):
        proc = record(project, RACE_SCRIPT)
        assert proc.returncode == 0 and "partially initialized" not in proc.stderr, proc.stderr
        assert "checkpoint" not in proc.stderr, proc.stderr
    df = q(project, "SELECT run_id, min(iteration) AS first FROM checkpoints WHERE name = 'state' GROUP BY ALL")
    assert len(df) == 3 and df["first"].tolist() == [0, 0, 0]


def test_imported_waits_for_a_module_another_thread_is_importing(monkeypatch):
    """A half-made module in sys.modules is never handed out."""
    import types

    half = types.ModuleType("flordb_fake_half")
    half.__spec__ = None
    monkeypatch.setitem(sys.modules, "flordb_fake_half", half)
    assert state._imported("flordb_fake_half") is half
    assert state._imported("flordb_not_imported_anywhere") is None
    assert state._numpy() is np
