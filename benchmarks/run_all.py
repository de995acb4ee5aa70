"""Run every benchmark, one after another, in one go: ``make bench``.

Each benchmark is its own process (so none inherits another's warm caches or
threads) and prints its own final table; this script adds a header per
benchmark, its wall time and its exit status, and exits 1 when any benchmark
missed a target or failed. ``--quick`` passes ``--quick`` to each benchmark
(a smoke run, not the figures); ``--only NAME ...`` runs a subset.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# In the order the README lists them; the ones that take --quick.
BENCHMARKS = [
    ("bench_core", True),
    ("bench_query", True),
    ("bench_replay", True),
    ("bench_multiversion", True),
    ("bench_shapes", True),
    ("bench_scale", True),
    ("propagation_accuracy", False),
    ("bench_ui", True),
    ("bench_capture", True),
    ("bench_snapshot", True),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run of each benchmark")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    args = ap.parse_args()
    chosen = [(n, q) for n, q in BENCHMARKS if not args.only or n in args.only]
    unknown = set(args.only or ()) - {n for n, _ in BENCHMARKS}
    if unknown:
        print(f"Error: unknown benchmark {', '.join(sorted(unknown))}; choose from "
              f"{', '.join(n for n, _ in BENCHMARKS)}", file=sys.stderr)
        return 2
    status: list[tuple[str, int, float]] = []
    for name, takes_quick in chosen:
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if args.quick and takes_quick else [])
        print(f"\n===== {name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        status.append((name, rc, time.perf_counter() - t0))
    print("\n===== summary")
    for name, rc, secs in status:
        print(f"{name:24s} exit {rc}  {secs:7.1f} s")
    return 0 if all(rc == 0 for _, rc, _ in status) else 1


if __name__ == "__main__":
    sys.exit(main())
