"""Multiversion hindsight query vs re-running from scratch (issue 4's measure).

Builds a project in a temporary directory and records runs of the four
versions of ``examples/evolution`` (v1 twice, v2, v3, and v4 without its
grad_norm line: 5 runs, 4 code versions; 2 recording at a time, as in
``flordb demo``). The current ``train.py`` is then v4, which logs
``grad_norm`` inside the step loop, and

    flordb query "SELECT run_id, epoch, avg(grad_norm) ... FROM logs ..." --yes

is timed end to end as a subprocess (the recorded segments are ingested
beforehand, by an ordinary query, so the figure is the hindsight work:
locate, propagate, plan, materialize, replay, ingest, answer). The
alternative is timed in the same run: each recorded run re-executed from
scratch with the statement inserted into its version (the texts come from
``flordb.hindsight.propagate``), sequentially and 2 at a time, in a separate
project. The replayed grad_norm values are compared with those re-runs.

    .venv/bin/python benchmarks/bench_multiversion.py            # ~2-3 minutes
    .venv/bin/python benchmarks/bench_multiversion.py --quick    # < 1 minute

There is no target in the issue for this ratio; the table marks the figures
as information, except that every grad_norm row must be filled and equal the
re-runs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_replay import (  # noqa: E402
    FLORDB, PYTHON, ROOT, base_env, final_table, git, indent, load_average, new_project, replay_stats, run, say,
)

EVOLUTION = ROOT / "examples" / "evolution"
STATEMENT_NAME = "grad_norm"
QUERY = ("SELECT run_id, left(version, 7) AS version, lr, epoch, avg(grad_norm) AS grad_norm"
         " FROM logs GROUP BY ALL ORDER BY ALL")


def current_without_statement() -> str:
    text = (EVOLUTION / "v4_train.py").read_text()
    return "".join(l for l in text.splitlines(keepends=True) if f'"{STATEMENT_NAME}"' not in l)


def history(quick: bool) -> list[tuple[str, str, list[str]]]:
    """(label, source, kwargs) of each run, in recording order."""
    v = {k: (EVOLUTION / f"v{k}_train.py").read_text() for k in (1, 2, 3)}
    v[4] = current_without_statement()
    runs = [("v1", v[1], ["lr=0.001"]), ("v1", v[1], ["lr=0.01"]), ("v2", v[2], ["lr=0.003"]),
            ("v3", v[3], ["lr=0.001"]), ("v4", v[4], ["lr=0.003"])]
    if quick:
        runs = [runs[0], runs[2], runs[3], runs[4]]
    return runs


def record_history(project: Path, runs, epochs: int) -> float:
    """Record the runs, switching train.py between versions; 2 runs at a time within a version."""
    env = base_env()
    t0 = time.perf_counter()
    groups: list[tuple[str, str, list[list[str]]]] = []
    for label, source, kw in runs:
        if groups and groups[-1][0] == label:
            groups[-1][2].append(kw)
        else:
            groups.append((label, source, [kw]))
    for label, source, kws in groups:
        (project / "train.py").write_text(source)
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda kw: run([PYTHON, "train.py", "--kwargs", f"epochs={epochs}", *kw], project, env),
                          kws))
    return time.perf_counter() - t0


def ground_truth_sources(runs) -> list[str]:
    from flordb.hindsight.propagation import propagate

    current = (EVOLUTION / "v4_train.py").read_text()
    lineno = next(k for k, l in enumerate(current.splitlines(), 1) if f'"{STATEMENT_NAME}"' in l)
    return [propagate(current, lineno, source) for _, source, _ in runs]


def rerun_all(runs, sources: list[str], epochs: int, parallel: int) -> tuple[float, Path]:
    """Every run from scratch with the statement, ``parallel`` at a time; (seconds, project)."""
    files = {f"run{k}.py": text for k, text in enumerate(sources)}
    project = new_project("flordb-bench-rerun-", files)
    env = base_env()

    def one(k: int) -> None:
        _, _, kw = runs[k]
        run([PYTHON, f"run{k}.py", "--kwargs", f"epochs={epochs}", *kw], project, env)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, range(len(runs))))
    return time.perf_counter() - t0, project


def values_by_run(project: Path, runs, rerun: bool) -> dict[tuple[int, float], list[tuple[int, int, float]]]:
    """grad_norm rows of each run keyed by (version rank, lr), comparable between the two projects.

    The bench project's version rank is the order in which versions were first
    recorded; the re-run project's scripts are ``run<k>.py`` for the k-th run.
    """
    from flordb.api import query
    from flordb.store.layout import locate

    layout = locate(project)
    df = query("SELECT run_id, epoch, step, grad_norm FROM logs WHERE grad_norm IS NOT NULL"
               " ORDER BY run_id, epoch, step", replay="no", layout=layout)
    meta = query("SELECT DISTINCT run_id, script, version, lr FROM logs", replay="no", layout=layout)
    started = query("SELECT run_id, started FROM runs WHERE mode = 'record' ORDER BY started", replay="no",
                    layout=layout)
    labels = list(dict.fromkeys(label for label, _, _ in runs))
    if rerun:
        rank = {r.run_id: labels.index(runs[int(r.script[3:-3])][0]) for r in meta.itertuples()}
    else:
        first = {}
        for rid in started["run_id"]:
            v = meta[meta["run_id"] == rid]["version"].iloc[0]
            first.setdefault(v, len(first))
        rank = {r.run_id: first[r.version] for r in meta.itertuples()}
    out = {}
    for r in meta.itertuples():
        sub = df[df["run_id"] == r.run_id]
        out[(rank[r.run_id], float(r.lr))] = [(int(e), int(st), float(g))
                                             for e, st, g in zip(sub["epoch"], sub["step"], sub["grad_norm"])]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 runs of 2 epochs, no sequential re-run (< 1 minute)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default 10; quick 2)")
    ap.add_argument("--keep", action="store_true", help="keep the project directories")
    a = ap.parse_args()
    epochs = a.epochs or (2 if a.quick else 10)
    runs = history(a.quick)
    say(f"bench_multiversion{' --quick' if a.quick else ''}: {len(runs)} runs of"
        f" {len({r[0] for r in runs})} versions, {epochs} epochs each; load {load_average()}")

    project = new_project("flordb-bench-multiversion-", {"train.py": runs[0][1]})
    rec_s = record_history(project, runs, epochs)
    say(f"  recorded in {rec_s:.1f} s (2 at a time within a version)")
    env = base_env()
    ingest_s, _, _ = run(FLORDB + ["query", "SELECT count(*) AS runs FROM runs"], project, env)
    say(f"  ingest of the recorded segments (ordinary query, not counted): {ingest_s:.2f} s")

    (project / "train.py").write_text((EVOLUTION / "v4_train.py").read_text())
    say(f'\n$ flordb query "{QUERY}" --yes')
    q_s, out, err = run(FLORDB + ["query", QUERY, "--yes"], project, env)
    say(indent(err))
    executor_s, estimate = replay_stats(err)
    m = re.search(r"on (\d+) worker", err)
    say(f"  query end to end: {q_s:.2f} s (executor {executor_s:.2f} s, plan estimate {estimate:.2f} s)")
    rows = [l for l in out.splitlines() if l.strip()]
    say(indent("\n".join(rows[:4] + (["..."] if len(rows) > 4 else []))))
    refused = len(re.findall(r"left out: run", err))

    say(f"\n== re-running every run from scratch with the statement")
    sources = ground_truth_sources(runs)
    seq_s = None
    if not a.quick:
        seq_s, seq_project = rerun_all(runs, sources, epochs, 1)
        say(f"  sequentially: {seq_s:.2f} s")
        shutil.rmtree(seq_project, ignore_errors=True)
    par_s, par_project = rerun_all(runs, sources, epochs, 2)
    say(f"  2 at a time: {par_s:.2f} s")

    replayed = values_by_run(project, runs, rerun=False)
    truth = values_by_run(par_project, runs, rerun=True)
    expected = sum(len(t) for t in truth.values())
    filled = sum(len(r) for r in replayed.values())
    equal = replayed == truth and len(truth) == len(runs)
    say(f"  grad_norm rows: replayed {filled}, re-runs {expected}; values equal: {equal}")
    if a.keep:
        say(f"  projects kept: {project} {par_project}")
    else:
        shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(par_project, ignore_errors=True)

    table = [
        ("multiversion query, end to end", f"{q_s:.1f} s", "info", None),
    ]
    if seq_s is not None:
        table.append(("re-run all from scratch, sequential", f"{seq_s:.1f} s", "info", None))
        table.append(("query / sequential re-run", f"{q_s / seq_s:.2f}", "info", None))
    table += [
        ("re-run all from scratch, 2 at a time", f"{par_s:.1f} s", "info", None),
        ("query / 2-at-a-time re-run", f"{q_s / par_s:.2f}", "info", None),
        ("plan estimate vs executor time", f"{estimate:.1f} vs {executor_s:.1f} s", "info", None),
        ("runs left out by propagation", str(refused), "0", refused == 0),
        ("grad_norm rows filled, equal to re-runs", f"{filled}/{expected}, {'equal' if equal else 'DIFFERENT'}",
         "all, equal", equal and filled == expected and expected > 0),
    ]
    ok = final_table(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
