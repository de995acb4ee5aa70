"""Record overhead and replay speed (issue 3's performance figures).

Every figure is measured side by side in this one run, on a project built in a
temporary directory from ``benchmarks/workloads/mlp_train.py`` (a deterministic
MLP, one torch thread):

1. record overhead: the script with FlorDB (checkpointing at default settings)
   vs the same script with FLORDB_DISABLE=1, alternating pairs (the order
   flips every pair); the median of the per-pair ratios, both for the training
   loop (timed inside the script) and for the whole process.
2. epoch-level replay: a ~30-epoch run of ~2 s epochs is recorded, then a
   statement after the step loop is added and ``flordb replay weight_norm
   --yes`` is timed as a subprocess (interpreter start, planning, workers,
   imports, restore, ingest), relative to the original run's time.
3. step-level replay: a statement inside the step loop, replayed over every
   epoch of that run with ``--workers 1`` and ``--workers 2`` (alternating);
   speedup = median 1-worker time / median 2-worker time.

    .venv/bin/python benchmarks/bench_replay.py            # full, ~6 minutes on an idle machine
    .venv/bin/python benchmarks/bench_replay.py --quick    # smaller, < 1 minute; exit status
                                                           # checks correctness only (targets
                                                           # are for the full sizes)

Numbers from a shared or loaded machine are noisy: the load average is
printed with the results.
"""

from __future__ import annotations

import argparse
import os
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "benchmarks" / "workloads" / "mlp_train.py"
PYTHON = sys.executable
FLORDB = [PYTHON, "-m", "flordb"]

EPOCH_STATEMENT = 'flor.log("weight_norm", net[0].weight.norm().item())'
STEP_STATEMENT = 'flor.log("grad_norm", torch.nn.utils.clip_grad_norm_(net.parameters(), float("inf")).item())'


# -- helpers shared with bench_multiversion.py ---------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLORDB_", "BENCH_"))}
    env.update({"FLORDB_PROGRESS": "0", "PYTHONPATH": str(ROOT)})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@flordb.invalid", *args],
                   cwd=project, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def new_project(prefix: str, files: dict[str, str]) -> Path:
    project = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    for name, text in files.items():
        (project / name).write_text(text)
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "initial")
    return project


LAST_CPU = [0.0]  # CPU seconds of the last run()'s process tree (exact when runs are sequential)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> tuple[float, str, str]:
    """(wall seconds, stdout, stderr) of a subprocess; its CPU seconds go to LAST_CPU[0]."""
    c0 = children_cpu()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    LAST_CPU[0] = children_cpu() - c0
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return dt, p.stdout, p.stderr


def loop_seconds(stdout: str) -> float:
    m = re.search(r"train_loop_seconds=([0-9.]+)", stdout)
    return float(m.group(1)) if m else float("nan")


def replay_stats(stderr: str) -> tuple[float, float]:
    """(executor seconds, estimate) from ``Replayed N run(s) in X s (estimated Y s).``"""
    m = re.search(r"Replayed \d+ run\(s\) in ([0-9.]+) s \(estimated ([0-9.]+) s\)", stderr)
    return (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))


def insert_after_marker(source: str, marker: str, statement: str) -> str:
    lines = source.splitlines(keepends=True)
    for k, line in enumerate(lines):
        if line.strip() == f"# <{marker}>":
            indent = line[: len(line) - len(line.lstrip())]
            lines.insert(k, f"{indent}{statement}\n")
            return "".join(lines)
    raise ValueError(f"marker {marker} not found")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def fmt(x: float, unit: str = "") -> str:
    return "nan" if x != x else f"{x:.3f}{unit}"


def final_table(rows: list[tuple[str, str, str, bool | None]]) -> bool:
    """rows: (figure, measured, target, passed or None for information only)."""
    head = ("figure", "measured", "target", "result")
    cells = [head] + [(f, m, t, "-" if p is None else ("PASS" if p else "FAIL")) for f, m, t, p in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(4)]
    say()
    for k, r in enumerate(cells):
        say("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            say("  ".join("-" * w for w in widths))
    say(f"(load average {load_average()}, {os.cpu_count()} cores)")
    return all(p is not False for *_, p in rows)


def query_count(project: Path, sql: str) -> int:
    from flordb.api import query
    from flordb.store.layout import locate

    df = query(sql, replay="no", layout=locate(project))
    return int(df.iloc[0, 0])


# -- 1. record overhead -------------------------------------------------------------------------


def bench_overhead(cfg: dict, pairs: int) -> dict:
    say(f"\n== 1. record overhead: {cfg}, {pairs} alternating pairs")
    project = new_project("flordb-bench-overhead-", {"train.py": WORKLOAD.read_text()})
    env = {k: str(v) for k, v in cfg.items()}
    plain_env = base_env(FLORDB_DISABLE="1", **env)
    flor_env = base_env(**env)
    if pairs >= 5:
        run([PYTHON, "train.py"], project, plain_env)  # warm the page cache; not counted
    cpu_r: list[float] = []
    loop_r, proc_r, plain_loop, flor_loop, plain_proc, flor_proc = [], [], [], [], [], []
    for k in range(pairs):
        order = [("plain", plain_env), ("flor", flor_env)]
        if k % 2:
            order.reverse()
        got = {}
        for name, e in order:
            dt, out, _ = run([PYTHON, "train.py"], project, e)
            got[name] = (dt, loop_seconds(out), LAST_CPU[0])
        (pp, pl, pc), (fp, fl, fc) = got["plain"], got["flor"]
        plain_proc.append(pp), flor_proc.append(fp), plain_loop.append(pl), flor_loop.append(fl)
        loop_r.append(fl / pl)
        proc_r.append(fp / pp)
        cpu_r.append(fc / pc)
        say(f"  pair {k + 1}: loop plain {pl:.2f} s, flor {fl:.2f} s ({fl / pl:.3f});"
            f" process plain {pp:.2f} s, flor {fp:.2f} s ({fp / pp:.3f});"
            f" CPU plain {pc:.2f} s, flor {fc:.2f} s ({fc / pc:.3f})")
    ck = query_count(project, "SELECT count(*) FROM checkpoints")
    runs = query_count(project, "SELECT count(*) FROM runs")
    say(f"  epoch (plain, median): {statistics.median(plain_loop) / cfg['BENCH_EPOCHS']:.3f} s;"
        f" checkpoints taken: {ck} object(s) over {runs} run(s)")
    res = dict(loop=statistics.median(loop_r), proc=statistics.median(proc_r), cpu=statistics.median(cpu_r),
               plain_loop=statistics.median(plain_loop), flor_loop=statistics.median(flor_loop),
               plain_proc=statistics.median(plain_proc), flor_proc=statistics.median(flor_proc))
    say(f"  median ratio: loop {res['loop']:.3f}, process {res['proc']:.3f}, process CPU time {res['cpu']:.3f}")
    shutil.rmtree(project, ignore_errors=True)
    return res


# -- 2 and 3. replay ------------------------------------------------------------------------------


def bench_replay(cfg: dict, step_pairs: int, keep: bool) -> dict:
    say(f"\n== 2. epoch-level replay: recording {cfg}")
    project = new_project("flordb-bench-replay-", {"train.py": WORKLOAD.read_text()})
    env = base_env(**{k: str(v) for k, v in cfg.items()})
    train_s, out, _ = run([PYTHON, "train.py"], project, env)
    train_loop = loop_seconds(out)
    say(f"  original run: process {train_s:.2f} s, training loop {train_loop:.2f} s"
        f" ({train_loop / cfg['BENCH_EPOCHS']:.2f} s/epoch)")
    ck = query_count(project, "SELECT count(DISTINCT iteration) FROM checkpoints")
    say(f"  checkpointed iterations: {ck} of {cfg['BENCH_EPOCHS']}")

    source = WORKLOAD.read_text()
    (project / "train.py").write_text(insert_after_marker(source, "epoch-statement", EPOCH_STATEMENT))
    t0 = time.perf_counter()
    _, _, _ = run([PYTHON, "-c", "import flordb.cli.main"], project, env)
    cli_import = time.perf_counter() - t0
    ep_s, _, err = run(FLORDB + ["replay", "weight_norm", "--yes"], project, env)
    ep_exec, ep_est = replay_stats(err)
    say(indent(err))
    filled = query_count(project, "SELECT count(weight_norm) FROM logs WHERE weight_norm IS NOT NULL")
    say(f"  flordb replay weight_norm: {ep_s:.2f} s end to end (executor {ep_exec:.2f} s, plan estimate"
        f" {ep_est:.2f} s; CLI interpreter + imports alone {cli_import:.2f} s); weight_norm rows: {filled}")
    epoch = dict(train=train_s, train_loop=train_loop, replay=ep_s, executor=ep_exec, estimate=ep_est,
                 ratio=ep_s / train_s, ratio_loop=ep_s / train_loop, filled=filled, diverged="DIVERGED" in err)

    say(f"\n== 3. step-level replay over all {cfg['BENCH_EPOCHS']} epochs, 1 vs 2 workers ({step_pairs} pair(s))")
    (project / "train.py").write_text(insert_after_marker(source, "step-statement", STEP_STATEMENT))
    times: dict[int, list[float]] = {1: [], 2: []}
    estimates: dict[int, list[float]] = {1: [], 2: []}
    diverged = False
    crit: dict[int, list[float]] = {1: [], 2: []}  # CPU seconds of the busiest worker
    cpu_log = project / "cpu.jsonl"
    for k in range(step_pairs):
        for w in ((1, 2) if k % 2 == 0 else (2, 1)):
            cpu_log.unlink(missing_ok=True)
            wenv = {**env, "BENCH_CPU_LOG": str(cpu_log)}
            dt, _, err = run(FLORDB + ["replay", "grad_norm", "--workers", str(w), "--yes"], project, wenv)
            ex, est = replay_stats(err)
            tasks = [json.loads(l) for l in cpu_log.read_text().splitlines()] if cpu_log.exists() else []
            busiest = max((t["cpu"] for t in tasks if t["task"]), default=float("nan"))
            diverged |= "DIVERGED" in err
            times[w].append(dt)
            estimates[w].append(est)
            crit[w].append(busiest)
            say(f"  workers={w}: {dt:.2f} s end to end (executor {ex:.2f} s, estimate {est:.2f} s);"
                f" {len(tasks)} task(s), CPU s per task {[round(t['cpu'], 1) for t in tasks]},"
                f" whole command {LAST_CPU[0]:.1f} CPU s")
    steps = query_count(project, "SELECT count(grad_norm) FROM logs WHERE grad_norm IS NOT NULL")
    losses = query_count(project, "SELECT count(loss) FROM logs WHERE loss IS NOT NULL")
    t1, t2 = statistics.median(times[1]), statistics.median(times[2])
    say(f"  median: 1 worker {t1:.2f} s, 2 workers {t2:.2f} s, speedup {t1 / t2:.2f}x;"
        f" grad_norm rows {steps} (loss rows {losses})")
    c1, c2 = statistics.median(crit[1]), statistics.median(crit[2])
    say(f"  busiest worker's CPU time: 1 worker {c1:.1f} s, 2 workers {c2:.1f} s: {c1 / c2:.2f}x"
        " (the speedup with a free core per worker)")
    step = dict(t1=t1, t2=t2, speedup=t1 / t2, cpu_speedup=c1 / c2, filled=steps, expected=losses, diverged=diverged,
                est1=statistics.median(estimates[1]), est2=statistics.median(estimates[2]))
    if keep:
        say(f"  project kept at {project}")
    else:
        shutil.rmtree(project, ignore_errors=True)
    return dict(epoch=epoch, step=step)


def calibrate(epoch_seconds: float, hidden: int = 256, batch: int = 128) -> int:
    """Training examples ``n`` for an epoch of about ``epoch_seconds`` of the workload on this machine, now.

    Times training steps of the workload's model (one torch thread) in this
    process, so the sizes follow the machine and its current load.
    """
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 64), torch.randint(0, 10, (batch,))
    times = []
    for k in range(5):
        t0 = time.perf_counter()
        for _ in range(40):
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            loss.item()
        if k:
            times.append((time.perf_counter() - t0) / 40)
    steps = max(8, round(epoch_seconds / statistics.median(times)))
    return steps * batch


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs (< 1 minute), for tests")
    ap.add_argument("--pairs", type=int, default=None, help="record-overhead pairs (default 5; quick 2)")
    ap.add_argument("--step-pairs", type=int, default=None, help="1-vs-2-worker pairs (default 1; quick 1)")
    ap.add_argument("--only", choices=["overhead", "replay"], default=None)
    ap.add_argument("--keep", action="store_true", help="keep the replay project directory")
    a = ap.parse_args()
    if a.quick:
        over = dict(BENCH_EPOCHS=3, BENCH_N=8192, BENCH_HIDDEN=256)
        rep = dict(BENCH_EPOCHS=4, BENCH_N=8192, BENCH_HIDDEN=256)
    else:  # epochs of ~0.6 s (record overhead) and ~2 s (replay), sized for this machine now
        n1, n2 = calibrate(0.6), calibrate(2.0)
        over = dict(BENCH_EPOCHS=10, BENCH_N=n1, BENCH_HIDDEN=256)
        rep = dict(BENCH_EPOCHS=30, BENCH_N=n2, BENCH_HIDDEN=256)
    pairs = a.pairs or (2 if a.quick else 5)
    step_pairs = a.step_pairs or 1
    say(f"bench_replay{' --quick' if a.quick else ''}: python {sys.version.split()[0]}, load {load_average()}")
    rows = []
    if a.only in (None, "overhead"):
        o = bench_overhead(over, pairs)
        rows += [
            ("record overhead, training loop (flor/plain, median)", f"{o['loop']:.3f}", "<= 1.03", o["loop"] <= 1.03),
            ("record overhead, whole process (flor/plain, median)", f"{o['proc']:.3f}", "<= 1.03", o["proc"] <= 1.03),
            ("record overhead, process CPU time (flor/plain, median)", f"{o['cpu']:.3f}", "info", None),
        ]
    if a.only in (None, "replay"):
        r = bench_replay(rep, step_pairs, a.keep)
        e, s = r["epoch"], r["step"]
        rows += [
            ("epoch-level replay / original run (process)", f"{e['ratio']:.3f} ({e['replay']:.1f}/{e['train']:.1f} s)",
             "<= 0.10", e["ratio"] <= 0.10),
            ("epoch-level replay / original training loop", f"{e['ratio_loop']:.3f}", "info", None),
            ("epoch-level replay: rows filled, fidelity",
             f"{e['filled']}/{rep['BENCH_EPOCHS']}, {'DIVERGED' if e['diverged'] else 'ok'}", "all, ok",
             e["filled"] == rep["BENCH_EPOCHS"] and not e["diverged"]),
            ("epoch-level replay: estimate vs executor time", f"{e['estimate']:.1f} vs {e['executor']:.1f} s", "info", None),
            ("step-level replay speedup, 2 vs 1 workers", f"{s['speedup']:.2f}x ({s['t1']:.1f}/{s['t2']:.1f} s)",
             ">= 1.6x", s["speedup"] >= 1.6),
            ("step-level speedup by busiest worker's CPU time", f"{s['cpu_speedup']:.2f}x", "info", None),
            ("step-level replay: rows filled, fidelity",
             f"{s['filled']}/{s['expected']}, {'DIVERGED' if s['diverged'] else 'ok'}", "all, ok",
             s["filled"] == s["expected"] and not s["diverged"]),
            ("step-level replay: estimate 1w / 2w", f"{s['est1']:.1f} / {s['est2']:.1f} s", "info", None),
        ]
    if a.quick:  # the targets are for the full sizes; a quick run checks that everything works
        rows = [(f, m, t if t == "info" or not any(c.isdigit() for c in t) else f"{t} (full run)",
                 p if t == "info" or not any(c.isdigit() for c in t) else None) for f, m, t, p in rows]
    ok = final_table(rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
