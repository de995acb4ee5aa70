"""`flordb ui` in a real browser: headless Debian chromium driven by Playwright.

What a person sees: the runs table, two curves for two selected runs, a SQL
result, the replay plan and its Replay button filling a missing column; a
request without the token is refused; no request ever leaves the machine.
Set FLORDB_UI_SCREENSHOTS=DIR to save a screenshot of each page there (the
README's come from ``FLORDB_UI_SCREENSHOTS=docs``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest import LIVE, base_env, make_project, record, write_script  # noqa: E402
from flordb.store.layout import locate  # noqa: E402
from flordb.ui.server import start_in_thread  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium for the browser tests: `make test` installs it as root")
    pytest.skip("Debian's chromium is not installed (make test installs it as root)", allow_module_level=True)

SCREENSHOTS = os.environ.get("FLORDB_UI_SCREENSHOTS")

SCRIPT = """
import argparse
import flordb as flor

def train_epoch(lr, epoch, steps):
    for step in flor.loop("step", range(steps)):
        flor.log("loss", lr / (1 + epoch * steps + step) + 0.001 * (step % 7))

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=40)
steps = parser.parse_args().steps
lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(3)):
    train_epoch(lr, epoch, steps)
    flor.log("acc", 0.5 + epoch * lr)
"""
MISSING = "    flor.log(\"acc_half\", (0.5 + epoch * lr) / 2)\n"
REPLAY_SQL = "SELECT run_id, epoch, acc_half FROM logs ORDER BY run_id, epoch"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("uib") / "proj")
    record(root, SCRIPT, check=True)
    record(root, "train.py", "--kwargs", "lr=0.01", check=True)
    write_script(root, SCRIPT.replace("0.001 * (step % 7))", "0.002 * (step % 5))  # noisier"))  # a new version
    record(root, "train.py", "--steps", "30", "--kwargs", "lr=0.05", check=True)
    write_script(root, SCRIPT + MISSING)  # the current code logs a value no run recorded
    return root


@pytest.fixture(scope="module")
def server(project):
    srv, base, token = start_in_thread(locate(project))
    yield base, token
    srv.should_exit = True


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A page of a fresh browser context; every request it makes must stay on this machine."""
    base, token = server
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    pg = context.new_page()
    requests, errors = [], []
    pg.on("request", lambda r: requests.append(r.url))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{base}/runs?token={token}")
    pg.wait_for_selector("body[data-painted='1']")
    yield pg
    context.close()
    off = [u for u in requests if not (u.startswith(base + "/") or u.startswith("data:"))]
    assert requests and not off, f"requests left the machine: {off}"
    assert not errors, errors


def open_page(pg, base: str, path: str) -> None:
    pg.goto(base + path)
    pg.wait_for_selector("body[data-painted='1']")


def until(pg, expression: str, timeout: float = 20.0) -> None:
    """Wait for a JavaScript expression to hold (the page's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout
    while not pg.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        pg.wait_for_timeout(50)


def shot(pg, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        pg.wait_for_timeout(300)
        pg.screenshot(path=str(Path(SCREENSHOTS) / f"ui-{name}.png"))


def test_runs_table_lists_runs_with_their_args(page):
    rows = page.locator("#runs tbody tr")
    assert rows.count() == 3
    head = page.locator("#runs thead th").all_inner_texts()
    assert "lr" in head and "status" in head
    lr_col = head.index("lr")
    assert sorted(float(t) for t in page.locator(f"#runs tbody td:nth-child({lr_col + 1})").all_inner_texts()) \
        == [0.01, 0.05, 0.1]
    assert page.locator("#runs tbody .dot.finished").count() == 3
    page.fill("#where", "lr < 0.06")
    page.press("#where", "Enter")
    sync_api.expect(page.locator("#runs tbody tr")).to_have_count(2)
    page.fill("#where", "")
    page.press("#where", "Enter")
    sync_api.expect(page.locator("#runs tbody tr")).to_have_count(3)
    page.select_option("#metric", "acc")
    page.wait_for_selector("#runs th:has-text('acc (last)')")
    shot(page, "runs")


def test_runs_are_sorted_and_paged_by_the_server(page, server):
    base, _ = server
    open_page(page, base, "/runs?limit=2")
    head = page.locator("#runs thead th").all_inner_texts()
    col = head.index("lr") + 1
    lr = lambda: [float(t) for t in page.locator(f"#runs tbody td:nth-child({col})").all_inner_texts()]  # noqa: E731
    assert page.locator("#runs tbody tr").count() == 2 and "(1–2 shown)" in page.inner_text("#count")
    page.click("#runs th[data-key='arg:lr']")  # ascending, from the server
    sync_api.expect(page.locator("#runs th[data-key='arg:lr']")).to_contain_text("▲")
    assert lr() == [0.01, 0.05]
    page.click("#next-page")
    sync_api.expect(page.locator("#runs tbody tr")).to_have_count(1)
    assert lr() == [0.1] and "sort=arg" in page.url and "offset=2" in page.url
    page.click("#prev-page")
    sync_api.expect(page.locator("#runs tbody tr")).to_have_count(2)


def test_two_selected_runs_draw_two_curves_with_every_point(page, server):
    base, _ = server
    # One run of each version (lr 0.05 is the only run of the second), whatever order the table shows
    listed = json.loads(page.evaluate("fetch('/runs.json').then(r => r.text())"))["runs"]
    by_lr = {r["args"]["lr"]: r["run_id"] for r in listed}
    picked = [by_lr[0.05], by_lr[0.01]]
    page.wait_for_selector(f"input.pick[data-run='{picked[0]}']")
    for run_id in picked:
        page.check(f"input.pick[data-run='{run_id}']")
    page.click("#to-curves")
    page.wait_for_url("**/curves?**")
    page.wait_for_selector("body[data-painted='1']")
    assert page.locator(".error").count() == 0, page.locator(".error").all_inner_texts()
    page.wait_for_selector(".panel[data-y='loss'][data-lines='2'] canvas")
    assert page.locator(".panel[data-y='loss'] .chart-legend .trace").count() == 2
    data = page.evaluate("document.querySelector(\".panel[data-y='loss']\").chart.lines.map(l => [l.name, l.x.length])")
    steps = {r["run_id"]: r for r in json.loads(page.evaluate("fetch('/runs.json').then(r => r.text())"))["runs"]}
    expected = {r: 3 * (30 if steps[r]["args"]["lr"] == 0.05 else 40) for r in picked}
    assert {name: n for name, n in data} == expected
    # hover: the point under the mouse, with its run and values
    point = page.evaluate("""(() => { const c = document.querySelector(".panel[data-y='loss']").chart, l = c.lines[0];
        const r = c.canvas.getBoundingClientRect(); return [r.left + l.px[10], r.top + l.py[10], l.name, l.y[10]]; })()""")
    page.mouse.move(point[0], point[1])
    tip = page.locator(".panel[data-y='loss'] .chart-tip")
    sync_api.expect(tip).to_be_visible()
    assert point[2] in tip.inner_text() and "global=10" in tip.inner_text()
    # zoom: drag across the plot; the range comes back from the server at full detail
    box = page.locator(".panel[data-y='loss'] canvas").bounding_box()
    y_mid = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 70, y_mid)
    page.mouse.down()
    page.mouse.move(box["x"] + 70 + (box["width"] - 82) / 2, y_mid, steps=4)
    page.mouse.up()
    until(page, "document.querySelector(\".panel[data-y='loss']\").chart.spec.range !== null")
    zoomed = page.evaluate("document.querySelector(\".panel[data-y='loss']\").chart.lines.map(l => Math.max(...l.x))")
    assert all(55 <= m <= 65 for m in zoomed), zoomed  # about half of 0..119
    page.dblclick(".panel[data-y='loss'] canvas")
    until(page, "document.querySelector(\".panel[data-y='loss']\").chart.spec.range === null")
    page.select_option("#add-y", "acc")
    page.wait_for_selector(".panel[data-y='acc'][data-lines='2'] canvas")
    page.check("#log")
    assert page.evaluate("document.querySelector(\".panel[data-y='loss']\").chart.logY") is True
    shot(page, "curves")
    open_page(page, base, f"/compare?runs={','.join(picked)}")
    assert page.locator("#args-differ th").all_inner_texts()[-1] == "lr"
    assert "loss (epoch 0, step 0)" in page.inner_text("#divergence")
    diff = page.locator("pre.diff").inner_text().splitlines()
    changed = {l.split("+ step) + ")[1]: l[0] for l in diff if "+ step) + " in l and l[0] in "+-"}
    # the two versions' differing line, one side each (which is A depends on the runs' order)
    assert sorted(changed) == ["0.001 * (step % 7))", "0.002 * (step % 5))  # noisier"]
    assert sorted(changed.values()) == ["+", "-"]
    page.wait_for_selector("#compare-plot[data-lines='2'] canvas")
    shot(page, "compare")


def test_sql_query_shows_the_right_rows(page, server, project):
    base, _ = server
    sql = "SELECT epoch, round(avg(acc), 4) AS acc FROM logs GROUP BY epoch ORDER BY epoch"
    page.goto(f"{base}/sql")
    page.fill("#sql", sql)
    page.click("#run")
    page.wait_for_selector("#results")
    cells = [r.split("\t") for r in page.locator("#results tbody tr").all_inner_texts()]
    means = [round(sum(0.5 + e * lr for lr in (0.1, 0.01, 0.05)) / 3, 4) for e in range(3)]
    assert [[int(a), float(b)] for a, b in cells] == [[e, m] for e, m in enumerate(means)]
    assert "q=SELECT" in page.url  # the query is in the URL, to bookmark and share
    page.click("#draw")
    page.wait_for_selector("#chart .scatterlayer .trace")
    shot(page, "sql")


def test_missing_column_shows_the_plan_and_replay_fills_it(page, server, project):
    base, _ = server
    from urllib.parse import quote

    open_page(page, base, f"/sql?q={quote(REPLAY_SQL)}")
    box = page.locator("#hindsight")
    assert "acc_half" in box.inner_text() and "flor.log(\"acc_half\"" in box.inner_text()
    assert page.locator("#plan tr").count() == 1 + 3  # header + one row per run
    shot(page, "hindsight")
    page.click("#replay")
    page.wait_for_selector("#results", timeout=120_000)
    assert page.locator("#results th.replayed").all_inner_texts() == ["acc_half"]
    rows = [r.split("\t") for r in page.locator("#results tbody tr").all_inner_texts()]
    cli = subprocess.run([sys.executable, "-m", "flordb", "query", REPLAY_SQL, "-f", "json", "--no-replay"],
                         cwd=project, env=base_env(project), capture_output=True, text=True, check=True)
    expected = json.loads(cli.stdout)
    assert len(rows) == len(expected) == 9
    page.locator("#sources a").first.click()  # the patched old source of the version
    assert 'flor.log("acc_half", (0.5 + epoch * lr) / 2)' in page.locator("pre[data-source]").inner_text()
    assert [[r[0], int(r[1]), float(r[2])] for r in rows] == \
        [[e["run_id"], e["epoch"], pytest.approx(e["acc_half"], rel=1e-5)] for e in expected]
    shot(page, "replayed")


def test_tags_are_added_and_removed_in_the_page(page, project):
    row = page.locator("#runs tbody tr").first
    run_id = row.get_attribute("data-run")
    row.locator("button.add-tag").click()
    row.locator("input.new-tag").fill("best-so-far")
    row.locator("input.new-tag").press("Enter")
    sync_api.expect(row.locator(".tag[data-tag='best-so-far']")).to_have_count(1)

    def cli_tags() -> str:  # what `flordb runs` says: the page and the CLI share one code path
        out = subprocess.run([sys.executable, "-m", "flordb", "runs", "--format", "json"], cwd=project,
                             env=base_env(project), capture_output=True, text=True, check=True)
        return next(r.get("tags") or "" for r in json.loads(out.stdout) if r["run_id"] == run_id)

    assert cli_tags() == "best-so-far"
    page.reload()
    page.wait_for_selector("body[data-painted='1']")
    row = page.locator(f"#runs tbody tr[data-run='{run_id}']")
    row.locator(".tag[data-tag='best-so-far'] button.untag").click()
    sync_api.expect(row.locator(".tag")).to_have_count(0)
    assert cli_tags() == ""




def test_a_running_runs_curve_grows_in_the_open_page(browser, tmp_path):
    """The page hears of new records from the server (server-sent events) and redraws, without a reload."""
    from conftest import spawn

    root = make_project(tmp_path / "live")
    proc = spawn(root, LIVE)
    srv = None
    try:
        runs_dir = root / ".flordb" / "segments"
        deadline = time.monotonic() + 60
        while not any(runs_dir.glob("*/seg-*")):
            assert time.monotonic() < deadline and proc.poll() is None, "the first epoch never reached the disk"
            time.sleep(0.05)
        srv, base, token = start_in_thread(locate(root))
        context = browser.new_context(viewport={"width": 1000, "height": 700})
        pg = context.new_page()
        pg.goto(f"{base}/curves?y=loss&token={token}")
        pg.wait_for_selector("body[data-painted='1']")
        points = "(document.querySelector(\".panel[data-y='loss']\")?.chart?.lines || []).map(l => l.x.length)"
        until(pg, f"JSON.stringify({points}) === '[10]'", timeout=30)
        pg.evaluate("window.stillThisPage = true")
        (root / "go").write_text("")
        until(pg, f"JSON.stringify({points}) === '[20]'", timeout=30)
        assert pg.evaluate("window.stillThisPage === true")  # redrawn in place, not reloaded
        assert proc.wait(60) == 0
        context.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if srv is not None:
            srv.should_exit = True


def test_a_request_without_the_token_is_refused(browser, server):
    base, _ = server
    context = browser.new_context()
    pg = context.new_page()
    resp = pg.goto(f"{base}/runs")
    assert resp.status == 403
    assert "token" in pg.inner_text("body")
    assert pg.goto(f"{base}/runs.json?token=guess").status == 403
    context.close()
