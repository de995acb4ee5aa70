"""Core performance figures of FlorDB (issue 2), printed one by one and then as a table.

    python benchmarks/bench_core.py            # all figures, < 3 minutes on a laptop CPU
    python benchmarks/bench_core.py --quick    # smaller sizes, for a smoke test

1. ``flor.log(name, float)`` inside ``flor.loop``: microseconds per call, median over
   repetitions of a 1,000,000-call loop (10 epochs x 100,000 steps), in a subprocess
   with a temporary FLORDB_HOME, next to the same loop without FlorDB.
2. Ingest of 1,000,000 log records from one run's segments (the segments written by
   figure 1's run) into a fresh catalog.
3. Queries on a catalog of 100 runs x 10,000 step-level ``loss`` records plus per-epoch
   ``acc`` (segments written with the runtime's SegmentWriter), through
   ``flordb.sql.engine.execute`` on an open catalog and through ``flordb.api.query``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LOG_LOOP = textwrap.dedent(
    """
    import json, statistics, sys, time
    import flordb as flor

    EPOCHS, STEPS, REPS = {epochs}, {steps}, {reps}
    perf, cpu = time.perf_counter, time.process_time

    def bare():
        t0, c0 = perf(), cpu()
        for epoch in range(EPOCHS):
            for step in range(STEPS):
                x = step * 0.5
        return perf() - t0, cpu() - c0

    def recorded():
        t0, c0 = perf(), cpu()
        for epoch in flor.loop("epoch", range(EPOCHS)):
            for step in flor.loop("step", range(STEPS)):
                x = step * 0.5
                flor.log("loss", x)
        t1, c1 = perf(), cpu()
        flor.commit()  # flush the tail; the next repetition is a new run
        return t1 - t0, c1 - c0

    bare_times, flor_times = [], []
    recorded()  # warm-up run (also the run whose segments figure 2 ingests)
    for _ in range(REPS):
        bare_times.append(bare())
        flor_times.append(recorded())
    print(json.dumps({{"bare": bare_times, "flor": flor_times}}))
    """
)


def figure_log(epochs: int, steps: int, reps: int, home: Path, work: Path, flush_interval: str | None = None) -> dict:
    script = work / "log_loop.py"
    script.write_text(LOG_LOOP.format(epochs=epochs, steps=steps, reps=reps))
    env = dict(os.environ, FLORDB_HOME=str(home), FLORDB_PROGRESS="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("FLORDB_DISABLE", None)
    env.pop("FLORDB_FLUSH_INTERVAL", None)
    if flush_interval is not None:
        env["FLORDB_FLUSH_INTERVAL"] = flush_interval
    out = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"log benchmark failed:\n{out.stderr}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    n = epochs * steps
    res = {"n": n}
    for i, clock in enumerate(("wall", "cpu")):
        bare = statistics.median(t[i] for t in data["bare"]) / n * 1e6
        flor = statistics.median(t[i] for t in data["flor"]) / n * 1e6
        res[clock] = {"bare_us": bare, "flor_us": flor, "overhead_us": flor - bare, "ratio": flor / bare,
                      "all_flor_us": [t[i] / n * 1e6 for t in data["flor"]]}
    return res


def figure_ingest(home: Path, records: int, reps: int = 3) -> dict:
    """Ingest the first run with ``records`` log records into fresh catalogs."""
    from flordb.store.catalog import open_catalog
    from flordb.store.layout import Layout
    from flordb.store.segments import read_json

    run_dirs = sorted(d for d in (home / "segments").iterdir() if d.is_dir())
    source = None
    for d in run_dirs:  # the warm-up run, by start time
        if read_json(d / "end.json") is not None:
            source = d if source is None or read_json(d / "run.json")["started"] < read_json(
                source / "run.json")["started"] else source
    times, opens, counted = [], [], None
    for _ in range(reps):
        fresh = Path(tempfile.mkdtemp(prefix="flordb-ingest-"))
        try:
            shutil.copytree(source, fresh / "segments" / source.name)
            layout = Layout(work_tree=fresh, home=fresh)
            t0 = time.perf_counter()
            with open_catalog(layout) as cat:
                t1 = time.perf_counter()
                stats = cat.ingest()
                t2 = time.perf_counter()
                counted = cat.execute("SELECT count(*) FROM records").fetchone()[0]
            opens.append(t1 - t0)
            times.append(t2 - t1)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
    if counted != records:
        raise SystemExit(f"ingest benchmark: expected {records} records, found {counted}")
    return {"seconds": statistics.median(times), "open_seconds": statistics.median(opens),
            "segments": stats.segments, "rows": stats.rows, "records": counted}


def build_catalog_store(home: Path, runs: int, epochs: int, steps: int) -> list[str]:
    """100 runs written through the runtime's own writer: one segment per epoch, like Run.flush."""
    from flordb.record.context import Blocks
    from flordb.store.segments import SegmentWriter, write_json_atomic

    host = socket.gethostname()
    ids = []
    t = time.time() - runs
    for r in range(runs):
        run_id = f"20250101-000000-{r:06x}"
        d = home / "segments" / run_id
        d.mkdir(parents=True)
        write_json_atomic(d / "run.json", {"run_id": run_id, "mode": "record", "script": "train.py", "argv": [],
                                           "started": t + r, "pid": 0, "host": host, "version": f"{r % 7:040x}"})
        w = SegmentWriter(d)
        blocks = Blocks()
        outer, inner = ("epoch",), ("epoch", "step")
        outer_base = blocks.open(outer, ())
        args = [("lr", 10.0 ** -(1 + r % 4)), ("seed", r)]
        for e in range(epochs):
            logs = []
            inner_base = blocks.open(inner, (e,))  # contexts as flor.loop makes them
            for s in range(steps):
                logs.append(("loss", 1.0 / (1 + e * steps + s) + r * 1e-3, inner_base + s))
            logs.append(("acc", e / epochs, outer_base + e))
            events = [{"kind": "loop", "path": inner, "coord": (e,), "n": steps, "t0": 0.0, "t1": 1.0},
                      {"kind": "iter", "path": outer, "coord": (e,), "t0": 0.0, "t1": 1.0, "t2": 1.0}]
            w.write(logs, args if e == 0 else [], events, blocks.table)
        write_json_atomic(d / "end.json", {"status": "finished", "ended": t + r + 1, "error": None})
        ids.append(run_id)
    return ids


def median_ms(fn, reps: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def figure_queries(runs: int, epochs: int, steps: int, reps: int = 5) -> dict:
    from flordb.sql import engine
    from flordb.api import query
    from flordb.store.catalog import open_catalog
    from flordb.store.layout import Layout

    home = Path(tempfile.mkdtemp(prefix="flordb-query-"))
    try:
        t0 = time.perf_counter()
        ids = build_catalog_store(home, runs, epochs, steps)
        build = time.perf_counter() - t0
        layout = Layout(work_tree=home, home=home)
        t0 = time.perf_counter()
        with open_catalog(layout) as cat:
            cat.ingest()
            n = cat.execute("SELECT count(*) FROM records WHERE name = 'loss'").fetchone()[0]
        ingest = time.perf_counter() - t0
        if n != runs * epochs * steps:
            raise SystemExit(f"query benchmark: expected {runs * epochs * steps} loss records, found {n}")
        one = ids[len(ids) // 2]
        sqls = {
            "group": "SELECT run_id, epoch, avg(loss) FROM logs GROUP BY ALL",
            "one_run": f"SELECT epoch, step, loss FROM logs WHERE run_id = '{one}'",
        }
        expect = {"group": runs * epochs, "one_run": epochs * steps}
        out = {"build_seconds": build, "ingest_seconds": ingest}
        with open_catalog(layout) as cat:
            for key, sql in sqls.items():
                rows = len(engine.execute(cat, sql))
                if rows != expect[key]:
                    raise SystemExit(f"query benchmark: {sql!r} gave {rows} rows, expected {expect[key]}")
                out[f"{key}_engine_ms"], out[f"{key}_engine_all"] = median_ms(lambda: engine.execute(cat, sql), reps)
        for key, sql in sqls.items():
            out[f"{key}_api_ms"], out[f"{key}_api_all"] = median_ms(
                lambda: query(sql, replay="no", layout=layout), reps)
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes (not comparable to targets)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the 1M-call loop (default 5)")
    opts = parser.parse_args()
    scale = 10 if opts.quick else 1
    epochs, steps = 10, 100_000 // scale
    q_runs, q_epochs, q_steps = 100 // scale, 10, 1000

    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs; {'QUICK (not comparable)' if opts.quick else 'full sizes'}")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="flordb-bench-"))
    try:
        home = work / "home"
        print(f"\n[1] flor.log inside flor.loop: {epochs} epochs x {steps:,} steps, median of {opts.reps} repetitions")
        log = figure_log(epochs, steps, opts.reps, home, work)
        for clock in ("wall", "cpu"):
            r = log[clock]
            print(f"    {clock:4} bare loop {r['bare_us']:.3f} us/iteration; with flor.log {r['flor_us']:.3f}"
                  f" us/iteration (reps: {', '.join(f'{x:.2f}' for x in r['all_flor_us'])});"
                  f" overhead {r['overhead_us']:.3f} us/call, ratio {r['ratio']:.1f}x")
        rows.append(("flor.log per call, loop and flushes included (us, wall)", log["wall"]["flor_us"], 2.0, "us"))
        rows.append(("flor.log overhead over the bare loop (us, wall)", log["wall"]["overhead_us"], 2.0, "us"))
        rows.append(("flor.log per call (us, process CPU time)", log["cpu"]["flor_us"], 2.0, "us"))
        coalesced = figure_log(epochs, steps, max(1, opts.reps // 2), work / "home2", work, flush_interval="1e9")
        r, c = coalesced["wall"], coalesced["cpu"]
        print(f"    same, flushes deferred to the end (FLORDB_FLUSH_INTERVAL=1e9): {r['flor_us']:.3f} us/iteration wall,"
              f" {c['flor_us']:.3f} CPU (so the per-iteration flush costs {log['cpu']['flor_us'] - c['flor_us']:.3f}"
              f" us of CPU per call)")
        rows.append(("flor.log per call without flushes in the loop (us, wall)", r["flor_us"], 2.0, "us"))

        print(f"\n[2] ingest of one run's {epochs * steps:,} log records into a fresh catalog (median of 3)")
        ing = figure_ingest(home, epochs * steps)
        print(f"    ingest              {ing['seconds']:.3f} s  ({ing['segments']} segments, {ing['rows']:,} rows;"
              f" catalog open+migrate {ing['open_seconds']:.3f} s)")
        rows.append(("ingest 1M records (s)", ing["seconds"], 3.0, "s"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n[3] queries on {q_runs} runs x {q_epochs * q_steps:,} step-level loss records + per-epoch acc")
    qs = figure_queries(q_runs, q_epochs, q_steps)
    print(f"    building segments   {qs['build_seconds']:.2f} s;  ingest {qs['ingest_seconds']:.2f} s")
    labels = {"group": "SELECT run_id, epoch, avg(loss) FROM logs GROUP BY ALL",
              "one_run": "SELECT epoch, step, loss FROM logs WHERE run_id = ..."}
    for key, label in labels.items():
        for via in ("engine", "api"):
            ms = qs[f"{key}_{via}_ms"]
            every = ", ".join(f"{x:.0f}" for x in qs[f"{key}_{via}_all"])
            print(f"    {via:6} {label}: {ms:.1f} ms  ({every})")
            rows.append((f"{key} via {'engine.execute' if via == 'engine' else 'api.query'} (ms)", ms, 200.0, "ms"))

    print("\n| figure | measured | target | result |")
    print("|---|---|---|---|")
    for name, value, target, unit in rows:
        fmt = f"{value:.3f}" if unit != "ms" else f"{value:.1f}"
        verdict = "pass" if value <= target else "FAIL"
        print(f"| {name} | {fmt} {unit} | <= {target:g} {unit} | {verdict} |")
    return 0 if all(value <= target for _, value, target, _ in rows) else 1  # run_all.py reports a miss


if __name__ == "__main__":
    sys.exit(main())
