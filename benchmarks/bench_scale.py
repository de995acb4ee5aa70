"""Replay at scale (issue 10): the resource-aware scheduler, its estimate, and Ray.

Every figure is measured side by side in this one run, on a project built in
a temporary directory from ``benchmarks/workloads/mlp_train.py``:

1. Two runs recorded with 1 torch thread: step-level replay (statement inside the
   step loop, every epoch re-executed) with ``--workers 2`` vs ``--workers 1``,
   alternating pairs. Target: at least 1.8x.
2. Runs whose threads fill the machine (recorded with as many torch threads as
   there are cores): ``--workers 2`` vs ``--workers 1``. The scheduler runs
   one such task at a time either way. Target: at least 0.95x.
3. The plan's estimate against the executor's actual time, for both (the
   cost model is calibrated by the replays before it). Target: within +-30%.
4. Ray on a local cluster (``ray.cluster_utils.Cluster``, one node with the
   machine's cores): the same epoch-level replay with ``--executor ray`` vs the
   local executor, overhead per task; and tasks per second that the Ray
   executor's task function completes for a trivial script.

    .venv/bin/python benchmarks/bench_scale.py            # full sizes, ~10 minutes on an idle 2-core machine
    .venv/bin/python benchmarks/bench_scale.py --quick    # small, a few minutes; targets are for the full sizes

It prints the threads each side used, then a final table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_replay import (  # noqa: E402
    EPOCH_STATEMENT, FLORDB, PYTHON, STEP_STATEMENT, WORKLOAD, base_env, final_table, insert_after_marker,
    new_project, run, say,
)

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
SINGLES, FILLED = ("0.001", "0.0011"), "0.002"  # the lr of the two 1-thread runs and of the machine-filling run
SINGLE = f"lr IN ({', '.join(SINGLES)})"
FILLED_WHERE = f"lr = {FILLED}"


def replay_times(stderr: str) -> tuple[float, float]:
    """(executor seconds, plan estimate) from ``Replayed N run(s) in X s (estimated Y s).``"""
    m = re.search(r"Replayed \d+ run\(s\) in ([0-9.]+) s \(estimated ([0-9.]+) s\)", stderr)
    return (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))


def plan_tasks(stderr: str) -> int:
    """Tasks in the plan's table (its rows end with: checkpoints, tasks, estimate)."""
    rows = [line.split() for line in stderr.splitlines() if re.match(r"^\s+\d{8}-\d{6}-\w+\s", line)]
    return sum(int(r[-3]) for r in rows if len(r) >= 4 and r[-3].isdigit()) or 1


def schedule_line(stderr: str) -> str:
    m = re.search(r"schedule: (.*)", stderr)
    return m.group(1) if m else "?"


def env_for(where: str) -> dict[str, str]:
    """The workload reads its torch thread count from the environment: replays must see the recorded one."""
    return base_env(FLORDB_BENCH_THREADS=1 if where == SINGLE else CORES)


def replay(project: Path, name: str, where: str, workers: int, *extra: str) -> tuple[float, float, float, str]:
    """(end to end, executor, estimate, schedule) of one ``flordb replay``."""
    cmd = [*FLORDB, "replay", name, "--where", where, "--workers", str(workers), "--yes", *extra]
    wall, _, err = run(cmd, project, env_for(where))
    executor, estimate = replay_times(err)
    return wall, executor, estimate, schedule_line(err)


def record(project: Path, lr: str, threads: int, cfg: dict) -> None:
    env = base_env(FLORDB_BENCH_THREADS=threads, **cfg)
    wall, _, _ = run([PYTHON, "train.py", "--kwargs", f"lr={lr}"], project, env)
    say(f"  recorded lr={lr} with {threads} torch thread(s): {wall:.1f} s")


def bench_workers(project: Path, where: str, pairs: int, label: str) -> dict:
    """Alternating --workers 1 / --workers 2 step-level replays; medians, and estimate vs actual."""
    say(f"\n== {label}")
    one, two, est_err = [], [], []
    for k in range(pairs):
        order = (1, 2) if k % 2 == 0 else (2, 1)
        for w in order:
            wall, ex, est, sched = replay(project, "grad_norm", where, w)
            (one if w == 1 else two).append(ex)
            if k > 0:  # the first pair teaches the cost model; later ones are calibrated
                est_err.append(est / ex - 1)
            say(f"  pair {k + 1}, --workers {w}: executor {ex:.2f} s (end to end {wall:.2f} s),"
                f" estimate {est:.2f} s; schedule {sched}")
    res = dict(one=statistics.median(one), two=statistics.median(two),
               err=max(est_err, key=abs) if est_err else float("nan"))
    res["speedup"] = res["one"] / res["two"]
    say(f"  median: 1 worker {res['one']:.2f} s, 2 workers {res['two']:.2f} s -> {res['speedup']:.2f}x;"
        f" worst calibrated estimate error {res['err']:+.0%}")
    return res


def bench_ray(project: Path, cfg: dict, quick: bool) -> dict:
    """The same epoch-level replay on the local executor and on a local Ray cluster."""
    import ray
    from ray.cluster_utils import Cluster

    say(f"\n== 4. Ray local cluster vs local executor (epoch-level replay of the 1-thread runs, {CORES} cores)")
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": CORES, "include_dashboard": False,
                                                             "object_store_memory": 100 << 20})
    say(f"  cluster up in {time.perf_counter() - t0:.1f} s at {cluster.address}")
    try:
        local_s, ray_s, tasks = [], [], 0
        for k in range(1 if quick else 3):
            for kind in (("local", "ray") if k % 2 == 0 else ("ray", "local")):
                extra = ("--executor", kind) + (("--address", cluster.address) if kind == "ray" else ())
                cmd = [*FLORDB, "replay", "weight_norm", "--where", SINGLE, "--workers", "2", "--yes",
                       *extra]
                wall, _, err = run(cmd, project, env_for(SINGLE))
                ex, est = replay_times(err)
                tasks = plan_tasks(err)
                (local_s if kind == "local" else ray_s).append(ex)
                say(f"  {kind}: executor {ex:.2f} s for {tasks} task(s) (end to end {wall:.2f} s,"
                    f" estimate {est:.2f} s)")
        per_task = (statistics.median(ray_s) - statistics.median(local_s)) * min(2, tasks) / max(1, tasks)
        say(f"  overhead per task on Ray: {per_task:+.2f} s")
        rate = ray_rate(cluster.address, 8 if quick else 32)
        say(f"  Ray executor task function, trivial script: {rate:.1f} tasks/s on {CORES} CPU(s)")
    finally:
        ray.shutdown()
        cluster.shutdown()
    return dict(per_task=per_task, rate=rate)


def ray_rate(address: str, n: int) -> float:
    """Tasks per second through :func:`flordb.hindsight.executors.ray.run_task` (a trivial script)."""
    import ray

    from flordb.hindsight.executors.ray import run_task

    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"print('ok')\n"
        info = tarfile.TarInfo("noop.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tree = ray.put(buf.getvalue())
    blobs = ray.put({})
    spec = json.dumps({"script": "noop.py", "argv": [], "cwd": ".", "threads": 1})
    remote = ray.remote(max_retries=0)(run_task)
    ray.get([remote.options(num_cpus=1).remote(spec, tree, blobs) for _ in range(CORES)])  # warm workers
    t0 = time.perf_counter()
    results = ray.get([remote.options(num_cpus=1).remote(spec, tree, blobs) for _ in range(n)])
    dt = time.perf_counter() - t0
    assert all(r["returncode"] == 0 for r in results)
    return n / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, one pair each")
    ap.add_argument("--pairs", type=int, default=None, help="alternating pairs per comparison (default 3)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray comparison")
    args = ap.parse_args()
    pairs = args.pairs or (2 if args.quick else 3)
    cfg = dict(BENCH_EPOCHS=4, BENCH_N=2048, BENCH_HIDDEN=64) if args.quick else \
        dict(BENCH_EPOCHS=10, BENCH_N=8192, BENCH_HIDDEN=256)
    say(f"bench_scale: {CORES} cores, sizes {cfg}, {pairs} alternating pairs")
    project = new_project("flordb-bench-scale-", {"train.py": WORKLOAD.read_text()})
    try:
        say("\n== recording")
        for lr in SINGLES:
            record(project, lr, 1, cfg)
        record(project, FILLED, CORES, cfg)
        text = WORKLOAD.read_text()
        text = insert_after_marker(text, "step-statement", STEP_STATEMENT)
        text = insert_after_marker(text, "epoch-statement", EPOCH_STATEMENT)
        (project / "train.py").write_text(text)
        single = bench_workers(project, SINGLE, pairs,
                               "1. 1-thread runs, step-level replay: --workers 2 vs --workers 1 (1 thread per worker)")
        filled = bench_workers(project, FILLED_WHERE, pairs, f"2. {CORES}-thread runs (fill the machine):"
                                                       f" --workers 2 vs --workers 1 ({CORES} threads per worker)")
        rows = [
            ("1-thread runs: 2 workers vs 1 (1 thread each)", f"{single['speedup']:.2f}x", ">= 1.8x",
             None if args.quick else single["speedup"] >= 1.8),
            (f"{CORES}-thread runs: --workers 2 vs 1 ({CORES} threads each)", f"{filled['speedup']:.2f}x", ">= 0.95x",
             None if args.quick else filled["speedup"] >= 0.95),
            ("plan estimate vs actual, 1-thread runs (worst, calibrated)", f"{single['err']:+.0%}", "within 30%",
             None if args.quick else abs(single["err"]) <= 0.30),
            (f"plan estimate vs actual, {CORES}-thread runs (worst, calibrated)", f"{filled['err']:+.0%}",
             "within 30%", None if args.quick else abs(filled["err"]) <= 0.30),
        ]
        if not args.no_ray:
            r = bench_ray(project, cfg, args.quick)
            rows += [("Ray local cluster: overhead per task vs local", f"{r['per_task']:+.2f} s", "<= 1 s",
                      None if args.quick else r["per_task"] <= 1.0),
                     ("Ray executor task function: tasks per second", f"{r['rate']:.1f}/s", "report", None)]
        ok = final_table(rows)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
