"""Console capture and extraction figures (issue 14), measured side by side in one run.

    python benchmarks/bench_capture.py              # full sizes, 21 pairs, a few minutes
    python benchmarks/bench_capture.py --quick      # smaller sizes, 3 pairs, a smoke test
    python benchmarks/bench_capture.py --pairs 31   # more pairs, a finer figure

1. Whole-process overhead of console capture: a training-like script that prints
   one line per step (numpy work per step, 1 thread), run as a subprocess with
   capture on and with ``FLORDB_CAPTURE=0``. Pairs of runs, the side that goes
   first alternating (ABBA...), after one warm-up run per side; per pair the
   ratio on/off of the child's CPU time (user + sys, from ``wait4``) and of its
   wall time; the figure is the median of the per-pair ratios. Target: at most
   1 % slower. Judged on CPU time: capture adds no thread and no waiting, so
   every cost it adds is CPU time of the training process, and the child's CPU
   time does not count the time other processes of a shared machine take from
   it, which wall time does (pairs of wall times on a loaded 2-core machine
   spread by several %, CPU times by well under 1 %). The wall-time median is
   printed next to it; on a quiet machine the two agree.
2. Extraction of one printed metric from 100 runs x 1,000 captured lines: the
   runs' segments are written with the runtime's own writer, ingested, then
   ``flordb.hindsight.extract.extract`` (scan in DuckDB, write the values as
   segments, ingest them) is timed on the open catalog. Target: at most 1 s.

Exit status 1 when a figure misses its target (``run_all.py`` reports it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PRINTING = textwrap.dedent(
    """
    import numpy as np
    import flordb as flor

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64))
    x = rng.standard_normal((64, 64))
    for epoch in flor.loop("epoch", range({epochs})):
        for step in flor.loop("step", range({steps})):
            for _ in range(4):
                x = np.tanh(x @ w * 0.1)
            loss = float((x ** 2).mean())
            print(f"| epoch {{epoch}} | step {{step}} | lr 0.0010 | loss {{loss:.4f}} | ppl {{np.exp(loss):.2f}}")
    """
)

THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _child(script: Path, work: Path, side: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + sys) of one run of the script."""
    env = dict(os.environ, FLORDB_HOME=str(work / f"home{side}"), FLORDB_PROGRESS="0",
               FLORDB_CAPTURE=side, PYTHONPATH=str(REPO), **THREADS)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script)], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"the printing script failed (FLORDB_CAPTURE={side}, exit {proc.returncode})")
    return wall, usage.ru_utime + usage.ru_stime


def figure_capture(epochs: int, steps: int, pairs: int, work: Path) -> dict:
    script = work / "printing.py"
    script.write_text(PRINTING.format(epochs=epochs, steps=steps))
    for side in ("1", "0"):  # warm-up: file caches, bytecode, the private git repository
        _child(script, work, side)
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    for k in range(pairs):
        order = ("1", "0") if k % 2 == 0 else ("0", "1")
        got = {side: _child(script, work, side) for side in order}
        on.append(got["1"])
        off.append(got["0"])
    cpu = [a[1] / b[1] for a, b in zip(on, off)]
    wall = [a[0] / b[0] for a, b in zip(on, off)]
    q = statistics.quantiles(cpu, n=4) if len(cpu) >= 2 else [cpu[0]] * 3
    return {
        "pairs": pairs, "lines": epochs * steps,
        "cpu_on_s": statistics.median(x[1] for x in on), "cpu_off_s": statistics.median(x[1] for x in off),
        "wall_on_s": statistics.median(x[0] for x in on), "wall_off_s": statistics.median(x[0] for x in off),
        "cpu_overhead_pct": 100.0 * (statistics.median(cpu) - 1.0),
        "wall_overhead_pct": 100.0 * (statistics.median(wall) - 1.0),
        "cpu_ratio_iqr_pct": 100.0 * (q[2] - q[0]),
        "wall_ratio_iqr_pct": 100.0 * (statistics.quantiles(wall, n=4)[2] - statistics.quantiles(wall, n=4)[0])
        if len(wall) >= 2 else 0.0,
    }


def build_console_store(home: Path, runs: int, lines: int) -> None:
    """``runs`` finished runs of 10 epochs that printed ``lines`` lines each (as capture writes them)."""
    from flordb.record.context import Blocks
    from flordb.store.segments import SegmentWriter, write_json_atomic

    per_epoch = lines // 10
    for r in range(runs):
        run_id = f"20260101-000000-{r:06x}"
        run_dir = home / "segments" / run_id
        run_dir.mkdir(parents=True)
        write_json_atomic(run_dir / "run.json", {"run_id": run_id, "mode": "record", "script": "train.py",
                                                 "started": 1.0e9 + r, "version": None})
        writer, blocks = SegmentWriter(run_dir), Blocks()
        main = blocks.open(("epoch",), ())
        for epoch in range(10):
            inner = blocks.open(("epoch", "step"), (epoch,))
            events = [{"kind": "iter", "path": ("epoch",), "coord": (epoch,), "t0": 0.0, "t1": 1.0}]
            for step in range(per_epoch):
                loss = 5.0 / (1 + epoch * per_epoch + step) + r * 1e-3
                ctx = inner + step
                path, coord = blocks.decode(ctx)
                events.append({"kind": "console", "name": "stdout", "path": path, "coord": coord,
                               "txt": f"| epoch {epoch} | {step}/{per_epoch} batches | lr 20.00 | loss {loss:.4f}"
                                      f" | ppl {2.718 ** loss:.2f}"})
            assert main >= 0
            writer.write([], [], events, blocks.table)
        write_json_atomic(run_dir / "end.json", {"status": "finished", "ended": 1.0e9 + r + 1, "error": None})


def figure_extract(runs: int, lines: int, work: Path) -> dict:
    from flordb.hindsight.extract import extract
    from flordb.store.catalog import Catalog
    from flordb.store.layout import Layout

    home = work / "extract-home"
    build_console_store(home, runs, lines)
    layout = Layout(work_tree=work, home=home)
    with Catalog(layout) as cat:
        cat.ingest()
        n_lines = cat.execute("SELECT count(*) FROM console").fetchone()[0]
        t0 = time.perf_counter()
        ex = extract(cat, "ppl")
        seconds = time.perf_counter() - t0
        stored = cat.execute("SELECT count(*) FROM records WHERE name = 'ppl'").fetchone()[0]
    assert stored == runs * lines, (stored, runs * lines)
    return {"seconds": seconds, "lines": n_lines, "values": ex.values, "runs": len(ex.written)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    ap.add_argument("--pairs", type=int, help="pairs of runs for the capture figure (default 21, --quick 3)")
    a = ap.parse_args()
    epochs, steps = (2, 1000) if a.quick else (5, 4000)
    pairs = a.pairs or (3 if a.quick else 21)
    runs, lines = (20, 200) if a.quick else (100, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"1. capture: {epochs * steps} printed lines per run, {pairs} pairs of runs (capture on, off; the side"
              " that goes first alternates) after one warm-up run per side; threads: 1 per side"
              " (OMP/OPENBLAS/MKL_NUM_THREADS=1), the two sides never run at the same time", flush=True)
        cap = figure_capture(epochs, steps, pairs, work)
        print(f"   CPU (user+sys): on {cap['cpu_on_s']:.3f} s  off {cap['cpu_off_s']:.3f} s  median of pair ratios"
              f" {1 + cap['cpu_overhead_pct'] / 100:.4f} ({cap['cpu_overhead_pct']:+.2f} %),"
              f" interquartile range of the ratios {cap['cpu_ratio_iqr_pct']:.2f} points   <- judged", flush=True)
        print(f"   wall:           on {cap['wall_on_s']:.3f} s  off {cap['wall_off_s']:.3f} s  median of pair ratios"
              f" {1 + cap['wall_overhead_pct'] / 100:.4f} ({cap['wall_overhead_pct']:+.2f} %),"
              f" interquartile range of the ratios {cap['wall_ratio_iqr_pct']:.2f} points", flush=True)
        print(f"2. extraction: {runs} runs x {lines} captured lines, one metric (DuckDB, its default threads:"
              f" {os.cpu_count()})", flush=True)
        ext = figure_extract(runs, lines, work)
        print(f"   {ext['values']} values from {ext['lines']} lines of {ext['runs']} runs in {ext['seconds']:.3f} s",
              flush=True)
    rows = [("capture overhead, print per step (CPU, median of pair ratios)", cap["cpu_overhead_pct"], "%", 1.0),
            (f"extract 1 metric, {runs} runs x {lines} lines", ext["seconds"], "s", 1.0)]
    print("\n| figure | measured | target | verdict |\n|---|---|---|---|")
    failed = False
    for name, value, unit, target in rows:
        ok = value <= target
        failed |= not ok
        print(f"| {name} | {value:.3f} {unit} | <= {target:g} {unit} | {'pass' if ok else 'FAIL'} |")
    if a.quick:
        print("(--quick: smaller sizes and 3 pairs; not the figures)")
    print(json.dumps({"capture": cap, "extract": ext}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
