"""Console capture and extraction figures (issue 14), measured side by side in one run.

    python benchmarks/bench_capture.py            # full sizes, about a minute
    python benchmarks/bench_capture.py --quick    # smaller sizes, for a smoke test

1. Whole-process overhead of console capture: a training-like script that prints
   one line per step (numpy work per step, 1 thread), run as a subprocess with
   capture on and with ``FLORDB_CAPTURE=0``, alternating, median wall time of each.
   Target: at most 1 % slower.
2. Extraction of one printed metric from 100 runs x 1,000 captured lines: the
   runs' segments are written with the runtime's own writer, ingested, then
   ``flordb.hindsight.extract.extract`` (scan in DuckDB, write the values as
   segments, ingest them) is timed on the open catalog. Target: at most 1 s.
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


def figure_capture(epochs: int, steps: int, reps: int, work: Path) -> dict:
    script = work / "printing.py"
    script.write_text(PRINTING.format(epochs=epochs, steps=steps))
    times: dict[str, list[float]] = {"1": [], "0": []}
    for rep in range(reps * 2 + 2):  # alternate sides; the first two runs warm the caches
        side = "1" if rep % 2 == 0 else "0"
        env = dict(os.environ, FLORDB_HOME=str(work / f"home{side}"), FLORDB_PROGRESS="0",
                   FLORDB_CAPTURE=side, PYTHONPATH=str(REPO), **THREADS)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(script)], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rep >= 2:
            times[side].append(time.perf_counter() - t0)
    on, off = statistics.median(times["1"]), statistics.median(times["0"])
    return {"on_s": on, "off_s": off, "overhead_pct": 100.0 * (on / off - 1.0), "lines": epochs * steps}


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    a = ap.parse_args()
    epochs, steps, reps = (2, 1000, 2) if a.quick else (5, 4000, 5)
    runs, lines = (20, 200) if a.quick else (100, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"1. capture: {epochs * steps} printed lines per run, {reps} runs per side, alternating;"
              " threads: 1 per side (OMP/OPENBLAS/MKL_NUM_THREADS=1), sides run one after the other", flush=True)
        cap = figure_capture(epochs, steps, reps, work)
        print(f"   capture on  {cap['on_s']:.3f} s   FLORDB_CAPTURE=0  {cap['off_s']:.3f} s"
              f"   ratio {cap['on_s'] / cap['off_s']:.4f}   overhead {cap['overhead_pct']:+.2f} %", flush=True)
        print(f"2. extraction: {runs} runs x {lines} captured lines, one metric (DuckDB, its default threads:"
              f" {os.cpu_count()})", flush=True)
        ext = figure_extract(runs, lines, work)
        print(f"   {ext['values']} values from {ext['lines']} lines of {ext['runs']} runs in {ext['seconds']:.3f} s",
              flush=True)
    rows = [("capture overhead, print per step", cap["overhead_pct"], "%", 1.0),
            (f"extract 1 metric, {runs} runs x {lines} lines", ext["seconds"], "s", 1.0)]
    print("\n| figure | measured | target | verdict |\n|---|---|---|---|")
    for name, value, unit, target in rows:
        print(f"| {name} | {value:.3f} {unit} | <= {target:g} {unit} | {'pass' if value <= target else 'FAIL'} |")
    print(json.dumps({"capture": cap, "extract": ext}))


if __name__ == "__main__":
    main()
