"""`flordb ui` without a browser: the JSON twins, the token guard, downsampling, hindsight, the command."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from conftest import LIVE, base_env, make_project, record, write_script  # noqa: E402
from flordb.store.layout import locate  # noqa: E402
from flordb.ui.app import create_app  # noqa: E402
from flordb.ui.curves import downsample  # noqa: E402

TOKEN = "t0ken-for-tests"
BASE = "http://127.0.0.1:5000"

SCRIPT = """
import flordb as flor
lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(40)):
        flor.log("loss", lr / (1 + epoch * 40 + step))
    flor.log("acc", epoch / 10)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two runs of one version (lr 0.1 and 0.01), and one run of a changed version."""
    root = make_project(tmp_path_factory.mktemp("ui") / "proj")
    record(root, SCRIPT, check=True)
    record(root, "train.py", "--kwargs", "lr=0.01", check=True)
    write_script(root, SCRIPT.replace("epoch / 10)", "epoch / 20)  # slower"))
    record(root, "train.py", "--kwargs", "lr=0.05", check=True)
    return root


@pytest.fixture
def client(store):
    app = create_app(locate(store), token=TOKEN)
    with TestClient(app, base_url=BASE) as c:
        c.get("/runs", params={"token": TOKEN})  # as a browser would: the URL once, then the cookie
        yield c


def runs_of(client) -> list[dict]:
    return client.get("/runs.json").json()["runs"]


# -- security ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/runs", "/runs.json", "/curves.json?y=loss", "/sql.json?q=SELECT+1",
                                  "/compare.json", "/-/static/app.js", "/-/static/plotly.min.js", "/"])
def test_every_path_needs_the_token(store, path):
    app = create_app(locate(store), token=TOKEN)
    c = TestClient(app, base_url=BASE)
    r = c.get(path)
    assert r.status_code == 403 and "token" in r.json()["error"]
    assert c.get(path + ("&" if "?" in path else "?") + "token=wrong").status_code == 403
    ok = c.get(path + ("&" if "?" in path else "?") + f"token={TOKEN}", follow_redirects=False)
    assert ok.status_code in (200, 302, 400)  # past the guard (compare.json without runs is bad input)
    assert f"flordb_token={TOKEN}" in ok.headers["set-cookie"] and "SameSite=Strict" in ok.headers["set-cookie"]
    assert c.get(path, follow_redirects=False).status_code == ok.status_code  # the cookie now stands for the token


def test_state_changes_need_post_with_the_token_header(client):
    assert client.post("/-/replay", json={"names": ["acc"]}).status_code == 403  # cookie alone: refused
    assert client.get("/-/replay").status_code == 405  # not a GET
    assert client.put("/runs.json").status_code == 403
    bad = client.post("/-/replay", content="nope", headers={"X-Flordb-Token": TOKEN})
    assert bad.status_code == 400 and "names" in bad.json()["error"]


def test_tags_are_edited_by_post_with_the_token(client):
    run_id = runs_of(client)[0]["run_id"]
    assert client.post("/-/tag", json={"run": run_id, "tag": "x"}).status_code == 403  # cookie alone: refused
    assert client.get("/-/tag").status_code == 405
    hdr = {"X-Flordb-Token": TOKEN}
    added = client.post("/-/tag", json={"run": run_id, "tag": " sweep-a "}, headers=hdr)
    assert added.status_code == 200 and added.json() == {"run_id": run_id, "name": "", "tags": "sweep-a"}
    assert next(r for r in runs_of(client) if r["run_id"] == run_id)["tags"] == "sweep-a"
    removed = client.post("/-/tag", json={"run": run_id, "tag": "sweep-a", "remove": True}, headers=hdr)
    assert removed.status_code == 200 and removed.json()["tags"] == ""
    again = client.post("/-/tag", json={"run": run_id, "tag": "sweep-a", "remove": True}, headers=hdr)
    assert again.status_code == 400 and "has no tag 'sweep-a'" in again.json()["error"]
    assert client.post("/-/tag", json={"run": run_id, "tag": "  "}, headers=hdr).json()["error"] == "the tag is empty"
    assert client.post("/-/tag", json={"run": "nosuch", "tag": "x"}, headers=hdr).status_code == 400
    assert client.post("/-/tag", content="{}", headers=hdr).status_code == 400


def test_cross_origin_and_foreign_hosts_are_refused(client):
    r = client.get("/runs.json", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    r = client.post("/-/replay", json={"names": ["acc"]}, headers={"Origin": "http://evil.example",
                                                                    "X-Flordb-Token": TOKEN})
    assert r.status_code == 403
    assert client.get("/runs.json", headers={"Host": "evil.example"}).status_code == 403  # DNS rebinding
    r = client.get("/runs.json")
    assert "access-control-allow-origin" not in r.headers
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"


def test_sql_is_read_only(client, store):
    before = client.get("/sql.json", params={"q": "SELECT count(*) AS n FROM runs"}).json()["rows"]
    for bad in ["DELETE FROM runs", "DROP TABLE runs", "CREATE TABLE x AS SELECT 1",
                "COPY runs TO '/tmp/flordb-ui-leak.csv'"]:
        r = client.get("/sql.json", params={"q": bad})
        assert r.status_code == 400 and r.json()["error"]
    assert client.get("/sql.json", params={"q": "SELECT count(*) AS n FROM runs"}).json()["rows"] == before
    assert not os.path.exists("/tmp/flordb-ui-leak.csv")


# -- runs ----------------------------------------------------------------------------------


def test_runs_json_lists_runs_with_typed_args(client):
    data = client.get("/runs.json").json()
    assert data["args"] == ["lr"] and data["total"] == 3
    assert sorted(r["args"]["lr"] for r in data["runs"]) == [0.01, 0.05, 0.1]
    r = data["runs"][0]
    assert r["status"] == "finished" and len(r["version"]) == 40 and r["script"] == "train.py"
    assert {c["name"] for c in data["columns"]["log"]} == {"loss", "acc"}


def test_runs_json_sorts_and_pages_on_the_server(client):
    lrs = lambda d: [r["args"]["lr"] for r in d["runs"]]  # noqa: E731
    up = client.get("/runs.json", params={"sort": "arg:lr", "dir": "asc"}).json()
    assert lrs(up) == [0.01, 0.05, 0.1] and up["count"] == 3
    first = client.get("/runs.json", params={"sort": "arg:lr", "limit": 2}).json()
    assert lrs(first) == [0.1, 0.05] and (first["count"], first["offset"], first["limit"]) == (3, 0, 2)
    rest = client.get("/runs.json", params={"sort": "arg:lr", "limit": 2, "offset": 2}).json()
    assert lrs(rest) == [0.01]
    newest = client.get("/runs.json").json()["runs"]  # by default the latest run first
    assert [r["started"] for r in newest] == sorted((r["started"] for r in newest), reverse=True)
    filtered = client.get("/runs.json", params={"where": "lr < 0.06", "sort": "arg:lr", "limit": 1}).json()
    assert lrs(filtered) == [0.05] and filtered["count"] == 2 and filtered["total"] == 3
    bad = client.get("/runs.json", params={"sort": "nosuch"})
    assert bad.status_code == 400 and "cannot sort by 'nosuch'" in bad.json()["error"]
    assert client.get("/runs.json", params={"limit": "x"}).status_code == 400


def test_runs_json_shows_names_and_tags(store):
    run_id = next(r for r in TestClient(create_app(locate(store), token=TOKEN), base_url=BASE)
                  .get("/runs.json", params={"token": TOKEN}).json()["runs"] if r["args"]["lr"] == 0.01)["run_id"]
    for args in (["tag", run_id, "baseline"], ["tag", run_id, "small-lr", "--name"]):
        subprocess.run([sys.executable, "-m", "flordb", *args], cwd=store, env=base_env(store), check=True,
                       capture_output=True)
    app = create_app(locate(store), token=TOKEN)
    runs = TestClient(app, base_url=BASE).get("/runs.json", params={"token": TOKEN}).json()["runs"]
    row = next(r for r in runs if r["run_id"] == run_id)
    assert row["tags"] == "baseline" and row["name"] == "small-lr"


def test_runs_filter_by_predicate_status_and_last_value(client):
    kept = client.get("/runs.json", params={"where": "lr > 0.02"}).json()["runs"]
    assert sorted(r["args"]["lr"] for r in kept) == [0.05, 0.1]
    assert client.get("/runs.json", params={"status": "running"}).json()["runs"] == []
    last = client.get("/runs.json", params={"metric": "loss"}).json()["runs"]
    for r in last:  # loss at epoch 2, step 39
        assert r["metric"] == pytest.approx(r["args"]["lr"] / (1 + 2 * 40 + 39))
    bad = client.get("/runs.json", params={"where": "1=1; DROP TABLE runs"})
    assert bad.status_code == 400 and "predicate" in bad.json()["error"]
    assert client.get("/runs.json", params={"where": "nosuch > 1"}).status_code == 400


# -- curves --------------------------------------------------------------------------------


def test_curves_json_one_line_per_selected_run(client):
    ids = [r["run_id"] for r in runs_of(client)][:2]
    data = client.get("/curves.json", params={"runs": ",".join(ids), "y": "loss,acc"}).json()
    loss, acc = data["panels"]
    assert [l["run_id"] for l in loss["lines"]] == ids
    assert loss["x"] == "global" and loss["x_choices"] == ["epoch", "step", "global"]
    assert all(len(l["x"]) == 120 and l["x"] == list(range(120)) for l in loss["lines"])
    lr = {r: data["runs"][r]["args"]["lr"] for r in ids}
    for line in loss["lines"]:
        assert line["y"][5] == pytest.approx(lr[line["run_id"]] / 6)
    assert acc["x"] == "epoch" and [len(l["x"]) for l in acc["lines"]] == [3, 3]
    packed = client.get("/curves.json", params={"runs": ",".join(ids), "y": "loss", "encoding": "f64"}).json()
    for plain_line, line in zip(loss["lines"], packed["panels"][0]["lines"]):  # what the page asks for: float64s
        assert np.frombuffer(base64.b64decode(line["x"]), "<f8").tolist() == plain_line["x"]
        assert np.frombuffer(base64.b64decode(line["y"]), "<f8").tolist() == plain_line["y"]
    assert client.get("/curves.json", params={"y": "loss", "encoding": "xml"}).status_code == 400
    assert client.get("/curves.json", params={"y": "loss", "x0": "inf"}).status_code == 400
    zoomed = client.get("/curves.json", params={"runs": ids[0], "y": "loss", "x0": "10", "x1": "19.5"}).json()
    assert zoomed["panels"][0]["lines"][0]["x"] == list(range(10, 20))
    per_step = client.get("/curves.json", params={"runs": ids[0], "y": "loss", "x": "step"}).json()["panels"][0]
    assert max(per_step["lines"][0]["x"]) == 39
    other = client.get("/curves.json", params={"y": "loss,nosuch"}).json()  # no runs named: the latest
    assert other["missing"] == ["nosuch"] and len(other["run_ids"]) == 3
    assert [p["y"] for p in other["panels"]] == ["loss"] and len(other["panels"][0]["lines"]) == 3


def test_downsampling_keeps_spikes_and_caps_points_per_line():
    n = 10_000
    ys = [1.0 / (1 + i) for i in range(n)]
    ys[4321], ys[777] = 50.0, -3.0  # one-step spikes must survive
    table = pa.table({"run_id": ["a"] * n + ["b"] * n, "step": list(range(n)) * 2, "loss": ys + ys[::-1]})
    out = downsample(table, ["step"], "step", 1000)
    for run in ("a", "b"):
        rows = [(x, y) for r, x, y in zip(*(out.column(c).to_pylist() for c in ("run_id", "x", "y"))) if r == run]
        assert 1000 < len(rows) <= 2000
        ys_kept = [y for _, y in rows]
        assert max(ys_kept) == 50.0 and min(ys_kept) == -3.0
        assert [x for x, _ in rows] == sorted(x for x, _ in rows)
    assert downsample(table, ["step"], "step", 5000).num_rows <= 4000  # never more than 1,000 buckets
    zoomed = downsample(table, ["step"], "step", 100, x0=4000, x1=4500)
    xs = zoomed.column("x").to_pylist()
    assert min(xs) >= 4000 and max(xs) <= 4500 and 50.0 in zoomed.column("y").to_pylist()
    assert zoomed.num_rows <= 2 * 2 * 100 and sum(zoomed.column("total").to_pylist()) == 2 * 501
    half = downsample(table, ["step"], "step", 100, x0=9000)  # one end of the range given
    assert min(half.column("x").to_pylist()) >= 9000 and sum(half.column("total").to_pylist()) == 2 * 1000


def test_global_step_counts_across_epochs_without_sorting_rows():
    # two runs, 3 epochs of 4 steps each (run b's rows arrive shuffled), and a NaN the plot skips
    rows = [(r, e, s, float(10 * e + s)) for r in ("a", "b") for e in range(3) for s in range(4)]
    rows = rows[:12] + rows[12:][::-1]
    rows[5] = ("a", 1, 1, float("nan"))
    table = pa.table({k: list(v) for k, v in zip(("run_id", "epoch", "step", "loss"), zip(*rows))})
    out = downsample(table, ["epoch", "step"], "global", 1000)
    for run in ("a", "b"):
        pts = [(x, y) for r, x, y in zip(*(out.column(c).to_pylist() for c in ("run_id", "x", "y"))) if r == run]
        assert [x for x, _ in pts] == [g for g in range(12) if (run, g) != ("a", 5)]
        assert all(y == 10 * (x // 4) + x % 4 for x, y in pts)  # epoch e, step s is global step 4e + s
    assert sum(out.column("total").to_pylist()) == 23  # the values drawn from: all but the NaN


# -- SQL, completion, compare ---------------------------------------------------------------


def test_sql_json_rows_match_the_query_api(client, store):
    from conftest import q

    sql = "SELECT epoch, avg(loss) AS loss FROM logs GROUP BY ALL ORDER BY ALL"
    data = client.get("/sql.json", params={"q": sql}).json()
    expected = q(store, sql)
    assert data["columns"] == ["epoch", "loss"] and data["count"] == 3
    assert [r[0] for r in data["rows"]] == list(expected["epoch"])
    assert [r[1] for r in data["rows"]] == pytest.approx(list(expected["loss"]))
    err = client.get("/sql.json", params={"q": "SELECT los FROM logs"}).json()
    assert "los" in err["error"] and "loss" in err["error"]  # never logged, not in the code: suggestions


def test_nan_infinity_and_decimals_reach_the_page_as_javascript_reads_them(client, store):
    sql = "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '-inf'::DOUBLE AS c, 1.5::DECIMAL(4, 1) AS d"
    assert client.get("/sql.json", params={"q": sql}).json()["rows"] == [["NaN", "Infinity", "-Infinity", 1.5]]
    big = client.get("/sql.json", params={"q": "SELECT (2::HUGEINT ** 70)::HUGEINT + 1 AS n"}).json()
    assert big["rows"] == [[2 ** 70 + 1]]  # exact, as the CLI prints it
    cli = subprocess.run([sys.executable, "-m", "flordb", "query", sql, "-f", "json"], cwd=store,
                         env=base_env(store), capture_output=True, text=True, check=True)
    assert json.loads(cli.stdout) == [{"a": "nan", "b": "inf", "c": "-inf", "d": "1.5"}]  # the same encoder


def test_completion_is_the_shells(client):
    r = client.get("/-/complete.json", params={"text": "SELECT lo"}).json()
    assert r["word"] == "lo" and "loss" in r["suggestions"]
    r = client.get("/-/complete.json", params={"text": "SELECT loss FROM ru"}).json()
    assert "runs" in r["suggestions"]


def test_compare_json_args_code_and_first_divergence(client):
    from flordb.comparison import compare

    runs = runs_of(client)
    by_lr = {r["args"]["lr"]: r for r in runs}
    a, b, c = by_lr[0.1]["run_id"], by_lr[0.01]["run_id"], by_lr[0.05]["run_id"]
    d = client.get("/compare.json", params={"runs": f"{a},{b}"}).json()
    assert d["args_differ"] == ["lr"] and d["diffs"][0]["same"]
    expected = compare(a, b, layout=locate(client.app.state.jobs.layout.work_tree), replay="no")
    assert d["divergence"]["text"] == str(expected.first_divergence)
    assert d["divergence"]["first"]["coordinates"] == {"epoch": 0, "step": 0}
    three = client.get("/compare.json", params={"runs": f"{a},{b},{c}"}).json()
    assert "divergence" not in three
    diff = three["diffs"][-1]
    assert diff["files"][0]["path"] == "train.py"
    assert "+    flor.log(\"acc\", epoch / 20)  # slower" in diff["files"][0]["diff"]
    assert client.get("/compare.json", params={"runs": a}).status_code == 400


# -- hindsight -----------------------------------------------------------------------------


def test_missing_column_plan_replay_and_provenance(tmp_path, monkeypatch):
    root = make_project(tmp_path / "proj")
    record(root, SCRIPT, check=True)
    record(root, "train.py", "--kwargs", "lr=0.01", check=True)
    write_script(root, SCRIPT + "    flor.log(\"acc2\", epoch * lr)\n")
    monkeypatch.chdir(root)
    app = create_app(locate(root), token=TOKEN)
    sql = "SELECT run_id, epoch, acc2 FROM logs ORDER BY ALL"
    with TestClient(app, base_url=BASE) as c:
        c.get("/runs", params={"token": TOKEN})
        res = c.get("/sql.json", params={"q": sql}).json()
        assert res["missing"] == ["acc2"] and len(res["plan"]["runs"]) == 2
        assert res["plan"]["statements"][0]["text"] == 'flor.log("acc2", epoch * lr)'
        job = c.post("/-/replay", json={"names": res["missing"], "where": res["where"]},
                     headers={"X-Flordb-Token": TOKEN})
        assert job.status_code == 202
        events = []
        with c.stream("GET", f"/-/jobs/{job.json()['job']}/events") as s:
            for line in s.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[-1]["state"] == "done", events[-1]
        assert events[-1]["done"] == events[-1]["total"] == 2
        # progress arrived while it ran (two tasks on two workers may finish together: done may go 0 -> 2)
        assert any(e["state"] == "running" for e in events[:-1])
        assert [e["done"] for e in events] == sorted(e["done"] for e in events)
        after = c.get("/sql.json", params={"q": sql}).json()
        assert after["replayed"] == ["acc2"]
        patched = events[-1]["patched"][0]
        src = c.get("/-/source.json", params={"version": patched["version"], "path": "train.py"}).json()
        assert 'flor.log("acc2", epoch * lr)' in src["text"]
    cli = subprocess.run([sys.executable, "-m", "flordb", "query", sql, "--format", "json", "--no-replay"],
                         cwd=root, env=base_env(root), capture_output=True, text=True, check=True)
    assert [[r["run_id"], r["epoch"], r["acc2"]] for r in json.loads(cli.stdout)] == after["rows"]


# -- the command ---------------------------------------------------------------------------


def _get(url: str):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_flordb_ui_prints_a_token_url_and_binds_localhost(store):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flordb", "ui", "--port", str(port)], cwd=store,
                            env=base_env(store), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 30
        while "token=" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        url = re.search(r"http://\S+", line).group(0)
        assert url.startswith(f"http://127.0.0.1:{port}/runs?token=") and len(url.split("token=")[1]) >= 24
        for _ in range(100):
            try:
                status, body = _get(url.replace("/runs?", "/runs.json?"))
                break
            except urllib.error.URLError:
                time.sleep(0.1)
        assert status == 200 and len(json.loads(body)["runs"]) == 3
        status, body = _get(f"http://127.0.0.1:{port}/runs.json")
        assert status == 403
        readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
        curl = next(l for l in readme.splitlines() if l.startswith("curl ") and "sql.json" in l)
        out = subprocess.run(["bash", "-c", curl.replace("127.0.0.1:5000", f"127.0.0.1:{port}")],
                             env={**os.environ, "TOKEN": url.split("token=")[1], "no_proxy": "*"},
                             capture_output=True, text=True, timeout=30)
        assert json.loads(out.stdout)["rows"] == [[3]]
    finally:
        proc.terminate()
        proc.wait(10)




def test_a_running_run_is_live_and_its_curve_grows(tmp_path):
    from conftest import spawn

    root = make_project(tmp_path / "proj")
    proc = spawn(root, LIVE)
    try:
        _follow_live_run(root, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _follow_live_run(root, proc):
    app = create_app(locate(root), token=TOKEN)
    with TestClient(app, base_url=BASE) as c:
        c.get("/runs", params={"token": TOKEN})
        deadline = time.monotonic() + 60
        while True:
            runs = c.get("/runs.json").json().get("runs", [])  # an error until the run makes the store
            if runs and runs[0]["status"] == "running":
                panel = c.get("/curves.json", params={"runs": runs[0]["run_id"], "y": "loss"}).json()
                if panel["panels"] and panel["panels"][0]["rows"] == 10:
                    break
            assert time.monotonic() < deadline and proc.poll() is None, "the first epoch never showed up"
            time.sleep(0.1)
        assert panel["runs"][runs[0]["run_id"]]["status"] == "running"
        (root / "go").write_text("")
        assert proc.wait(60) == 0
        runs = c.get("/runs.json").json()["runs"]
        assert runs[0]["status"] == "finished"
        grown = c.get("/curves.json", params={"runs": runs[0]["run_id"], "y": "loss"}).json()["panels"][0]
        assert grown["rows"] == 20 and grown["lines"][0]["x"] == list(range(20))


def test_change_stream_news_opens_the_catalog_only_when_the_disk_changed(store, monkeypatch):
    from flordb.ui import flor, views

    layout = locate(store)
    first = views.generation(layout)
    assert views.generation(layout) == first

    def closed(_layout):
        raise AssertionError("the catalog was opened though nothing changed on disk")

    with monkeypatch.context() as m:
        m.setattr(flor, "catalog", closed)
        assert views.generation(layout) == first  # twice a second per open page: only a few stat calls
    run_id = client_runs(store)[0]["run_id"]
    subprocess.run([sys.executable, "-m", "flordb", "tag", run_id, "news"], cwd=store, env=base_env(store),
                   check=True, capture_output=True)
    tagged = views.generation(layout)
    assert tagged != first
    subprocess.run([sys.executable, "-m", "flordb", "tag", run_id, "news", "--remove"], cwd=store,
                   env=base_env(store), check=True, capture_output=True)
    assert views.generation(layout) not in (tagged,)


def client_runs(store) -> list[dict]:
    return TestClient(create_app(locate(store), token=TOKEN), base_url=BASE).get(
        "/runs.json", params={"token": TOKEN}).json()["runs"]


def test_no_store_is_a_one_line_error_and_creates_nothing(tmp_path):
    root = make_project(tmp_path / "empty")
    c = TestClient(create_app(locate(root), token=TOKEN), base_url=BASE)
    r = c.get("/runs.json", params={"token": TOKEN})
    assert r.status_code == 400 and r.json()["error"].startswith("no FlorDB store")
    assert not (root / ".flordb").exists()
