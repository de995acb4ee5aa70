"""The query path next to DuckDB alone on the same rows (issue 12), printed as ratios in one run.

    python benchmarks/bench_query.py            # 100 runs x 10,000 step records, then 10 runs x 1M
    python benchmarks/bench_query.py --quick    # 10x smaller, a smoke test (not comparable to targets)
    python benchmarks/bench_query.py --no-small --large-steps 10000   # the large store at 1M records only

Every FlorDB figure is printed next to DuckDB answering the same question over
the same rows, with the ratio. DuckDB's side reads a plain table of the records
in their flat shape (run_id, seq, name, path, coord, vtype, num, txt, replay_id),
copied from the catalog's ``records`` view into a file of its own (``baseline.duckdb``,
not counted on disk): what one gets by loading the records into DuckDB as they come.

1. warm ``flor.query`` (a pandas DataFrame; DuckDB's ``.df()`` likewise): the per-(run, epoch) average, the same joined with a
   per-epoch column, one run, one epoch of one run (targets 50 ms / 300 ms at 10M);
2. the first query in a fresh process, after ``import flordb`` (target 300 ms),
   next to ``import duckdb`` + connect + the same query: in an interactive session
   (``python -i``, as in a notebook or IPython, where ``import flordb`` also imports
   the query side; the import's time is printed too) and, for reference, in a
   script (whose ``import flordb`` stays light, so its first query imports duckdb
   and pandas);
3. ``flordb query`` on a small store from a cold start (target 0.5 s wall),
   next to ``python -c "import duckdb; ..."``;
   and a new run ingested and queried while another process holds the catalog
   open read-only (the writer swaps in a copy; no waiting), next to the same with
   no other process (the ratio is what the copy costs);
4. bytes on disk per 1M records, catalog and segments together (target 20 MB).

Both sides use DuckDB's default thread count (printed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_core import build_catalog_store  # noqa: E402

BASELINE = "baseline.duckdb"  # DuckDB alone: the same records as one flat table

QUERIES = {
    # name: (flordb SQL over logs, the same question asked of DuckDB over records, rows expected)
    "avg per (run, epoch)": (
        "SELECT run_id, epoch, avg(loss) FROM logs GROUP BY ALL",
        "SELECT run_id, coord[1] AS epoch, avg(num) FROM records WHERE name = 'loss' GROUP BY ALL",
    ),
    "avg + per-epoch column": (
        "SELECT run_id, epoch, avg(loss), max(acc) FROM logs GROUP BY ALL",
        "SELECT l.run_id, l.coord[1] AS epoch, avg(l.num), max(a.num) FROM records l JOIN records a"
        " ON a.run_id = l.run_id AND a.name = 'acc' AND a.coord[1] = l.coord[1] WHERE l.name = 'loss' GROUP BY ALL",
    ),
    "one run": (
        "SELECT epoch, step, loss FROM logs WHERE run_id = '{run}'",
        "SELECT coord[1] AS epoch, coord[2] AS step, num AS loss FROM records WHERE name = 'loss' AND run_id = '{run}'",
    ),
    "one epoch of one run": (
        "SELECT step, loss FROM logs WHERE run_id = '{run}' AND epoch = 3",
        "SELECT coord[2] AS step, num FROM records WHERE name = 'loss' AND run_id = '{run}' AND coord[1] = 3",
    ),
}


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def wall(cmd: list[str], cwd: Path, env: dict, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr}")
    return statistics.median(times)


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def store(runs: int, epochs: int, steps: int) -> tuple[Path, list[str]]:
    from flordb.store.catalog import open_catalog
    from flordb.store.layout import Layout

    home = Path(tempfile.mkdtemp(prefix="flordb-bench-query-"))
    ids = build_catalog_store(home, runs, epochs, steps)
    with open_catalog(Layout(work_tree=home, home=home)) as cat:
        cat.ingest()
    import duckdb

    con = duckdb.connect(str(home / BASELINE))
    con.execute(f"ATTACH '{home / 'flor.duckdb'}' AS cat (READ_ONLY)")
    con.execute("CREATE TABLE records AS SELECT * FROM cat.records")
    con.execute("CREATE TABLE runs AS SELECT * FROM cat.runs")
    con.close()
    return home, ids


def warm_figures(home: Path, ids: list[str], reps: int) -> list[tuple[str, float, float]]:
    import duckdb

    import flordb as flor
    from flordb.store.layout import Layout

    layout = Layout(work_tree=home, home=home)
    run = ids[len(ids) // 2]
    out = []
    for name, (ours, theirs) in QUERIES.items():
        ours, theirs = ours.format(run=run), theirs.format(run=run)
        a = flor.query(ours, replay="no", layout=layout)
        con = duckdb.connect(str(home / BASELINE), read_only=True)
        b = con.sql(theirs).df()
        if len(a) != len(b):
            raise SystemExit(f"{name}: flordb gave {len(a)} rows, DuckDB {len(b)}")
        theirs_ms = median_ms(lambda: con.sql(theirs).df(), reps)  # pandas on both sides
        con.close()
        ours_ms = median_ms(lambda: flor.query(ours, replay="no", layout=layout), reps)
        out.append((name, ours_ms, theirs_ms))
    return out


def cold_figures(home: Path, reps: int) -> list[tuple[str, float, float]]:
    env = {**os.environ, "FLORDB_HOME": str(home), "PYTHONPATH": str(REPO)}
    py = sys.executable
    sql = "SELECT run_id, epoch, avg(loss) FROM logs GROUP BY ALL"
    raw = "SELECT run_id, coord[1], avg(num) FROM records WHERE name = 'loss' GROUP BY ALL"
    # In a notebook (or IPython, or the Python prompt) ``import flordb`` also imports the
    # query side, so the first query does not; ``python -i`` is such a session (stdin is
    # empty, so it ends after the code). A script pays those imports at its first query.
    timed = (
        "import time; t = time.perf_counter(); import flordb as flor; t0 = time.perf_counter();"
        f" flor.query({sql!r}, replay='no'); t1 = time.perf_counter(); print(t0 - t, t1 - t0)"
    )
    duck = (
        "import time; t0 = time.perf_counter(); import duckdb;"
        f" duckdb.connect({str(home / BASELINE)!r}, read_only=True).execute({raw!r}).df();"
        " print(time.perf_counter() - t0)"
    )

    def inner(code: str, *flags: str) -> list[float]:
        """Medians (ms) of the numbers the code prints, over ``reps`` fresh processes."""
        runs = [[float(x) for x in subprocess.run([py, *flags, "-c", code], env=env, capture_output=True, text=True,
                                                  stdin=subprocess.DEVNULL, check=True).stdout.split()]
                for _ in range(reps)]
        return [statistics.median(r[k] for r in runs) * 1e3 for k in range(len(runs[0]))]

    (imp_i, first_i), (imp_s, first_s), (duck_ms,) = inner(timed, "-i"), inner(timed), inner(duck)
    flordb_exe = str(Path(py).with_name("flordb"))
    cli = [flordb_exe, "query", "SELECT count(*) FROM runs"] if Path(flordb_exe).exists() else \
        [py, "-m", "flordb", "query", "SELECT count(*) FROM runs"]
    return [
        ("first query after import, notebook/interactive (ms)", first_i, duck_ms),
        ("  (its import flordb, interactive: query side loaded) (ms)", imp_i, float("nan")),
        ("first query after import, in a script (ms)", first_s, duck_ms),
        ("  (its import flordb, script: record side only) (ms)", imp_s, float("nan")),
        ("`flordb query` cold, small store (ms)",
         wall(cli, home, env, reps) * 1e3,
         wall([py, "-c", f"import duckdb; print(duckdb.connect({str(home / BASELINE)!r}, read_only=True)"
                          ".execute('SELECT count(*) FROM runs').fetchall())"], home, env, reps) * 1e3),
    ]


HOLDER = """
import sys, duckdb
for line in sys.stdin:  # each line: let go of the catalog and open it again (the file was swapped)
    con = duckdb.connect(sys.argv[1], read_only=True)
    con.execute("SELECT count(*) FROM runs").fetchall()
    print("holding", flush=True)
    sys.stdin.readline()
    con.close()
    print("released", flush=True)
"""


def add_run(home: Path, n: int) -> None:
    """One more finished run (10 x 100 steps) in ``home``'s segments, with a fresh id."""
    import json

    scratch = Path(tempfile.mkdtemp(prefix="flordb-bench-run-"))
    try:
        (old,) = build_catalog_store(scratch, 1, 10, 100)
        run_id = f"20250102-000000-{n:06x}"
        meta = json.loads((scratch / "segments" / old / "run.json").read_text())
        meta["run_id"] = run_id
        (scratch / "segments" / old / "run.json").write_text(json.dumps(meta))
        shutil.move(str(scratch / "segments" / old), str(home / "segments" / run_id))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def reader_figures(home: Path, reps: int) -> list[tuple[str, float, float]]:
    """A new run, then ``flor.query``: while a duckdb client holds the catalog, and with nobody else."""
    import flordb as flor
    from flordb.store.layout import Layout

    layout = Layout(work_tree=home, home=home)
    sql = "SELECT count(*) AS n FROM runs"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(layout.catalog)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    held, alone, n = [], [], 0
    try:
        for _ in range(reps):
            for times, hold in ((held, True), (alone, False)):
                n += 1
                add_run(home, n)
                if hold:
                    holder.stdin.write("open\n")
                    holder.stdin.flush()
                    assert holder.stdout.readline().strip() == "holding"
                t0 = time.perf_counter()
                runs = int(flor.query(sql, replay="no", layout=layout)["n"][0])
                times.append((time.perf_counter() - t0) * 1e3)
                if hold:
                    holder.stdin.write("close\n")
                    holder.stdin.flush()
                    assert holder.stdout.readline().strip() == "released"
                if runs < n:
                    raise SystemExit(f"the new run was not ingested ({runs} runs)")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    return [("new run ingested+queried: reader holding | none (ms)",
             statistics.median(held), statistics.median(alone))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes (not comparable to targets)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-small", action="store_true", help="skip the 1M-record store of 100 runs")
    parser.add_argument("--no-large", action="store_true", help="skip the 10M-record store")
    parser.add_argument("--large-steps", type=int, default=100_000,
                        help="steps per epoch of the large store (10 runs x 10 epochs; default 100,000: 10M records)")
    opts = parser.parse_args()
    import duckdb

    scale = 10 if opts.quick else 1
    threads = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"python {sys.version.split()[0]}, duckdb {duckdb.__version__}, {os.cpu_count()} CPUs;"
          f" DuckDB threads on both sides: {threads}; {'QUICK (not comparable)' if opts.quick else 'full sizes'}")
    rows: list[tuple[str, float, float, str]] = []
    sizes = [] if opts.no_small else [("small", 100 // scale, 10, 1000, 50.0)]
    if not opts.no_large:
        steps = opts.large_steps // scale
        label = "10M" if steps == 100_000 else f"{10 * 10 * steps / 1e6:g}M"
        sizes.append((label, 10, 10, steps, 300.0))
    for label, runs, epochs, steps, target in sizes:
        n = runs * epochs * steps
        t0 = time.perf_counter()
        home, ids = store(runs, epochs, steps)
        print(f"\n[{label}] {runs} runs x {epochs * steps:,} step records (+ per-epoch acc): {n:,} records,"
              f" built and ingested in {time.perf_counter() - t0:.1f} s")
        try:
            for name, ours, theirs in warm_figures(home, ids, opts.reps):
                goal = 30.0 if (label != "small" and name == "one epoch of one run") else target
                rows.append((f"[{label}] warm flor.query: {name} (ms)", ours, theirs, f"<= {goal:g}"))
            if label == "small":
                for name, ours, theirs in cold_figures(home, max(3, opts.reps // 2)):
                    goal = ("<= 300" if "notebook" in name else "report" if "first" in name or "(its" in name
                            else "<= 500")
                    rows.append((f"[{label}] {name}", ours, theirs, goal))
                for name, ours, theirs in reader_figures(home, max(3, opts.reps // 2)):
                    rows.append((f"[{label}] {name}", ours, theirs, "no wait (vs no reader)"))
            catalog = (home / "flor.duckdb").stat().st_size / 1e6
            segments = disk_mb(home / "segments")
            per_m = (catalog + segments) / (n / 1e6)
            print(f"    on disk: catalog {catalog:.1f} MB + segments {segments:.1f} MB = {per_m:.1f} MB per 1M records")
            rows.append((f"[{label}] MB on disk per 1M records (catalog + segments)", per_m, float("nan"), "<= 20"))
        finally:
            shutil.rmtree(home, ignore_errors=True)

    print(f"\n{'figure':62} {'flordb':>9} {'duckdb':>9} {'ratio':>7}  target")
    for name, ours, theirs, goal in rows:
        ratio = ours / theirs if theirs == theirs and theirs else float("nan")
        print(f"{name:62} {ours:9.1f} {theirs:9.1f} {ratio:7.1f}  {goal}")


if __name__ == "__main__":
    main()
