"""Issue 11: the cost of a run's code snapshot, now taken through GitPython.

On the demo's project (``examples/evolution``: v1 committed, v2 uncommitted)
plus ``--files`` small modules and an untracked file, side by side in one run:

1. warm, in one process: ``flordb.version.snapshot`` vs the git plumbing any
   snapshot needs (``git add -A`` into a temporary index, then ``git
   write-tree``, as bare subprocesses): the ratio is what FlorDB adds;
2. cold, a fresh interpreter each time: ``import flordb`` + one snapshot vs
   ``import flordb`` + that bare plumbing: the difference is mostly importing
   GitPython (paid once per run, only where a snapshot is taken);
3. where ``git`` is imported: not by ``import flordb``, nor by a run's ``flor.log``
   before its snapshot.

Medians of ``--reps`` alternating measurements. Threads: one Python thread on
each side; git runs one subprocess at a time on both.

    .venv/bin/python benchmarks/bench_snapshot.py [--quick] [--reps N] [--files N]
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

ROOT = Path(__file__).resolve().parents[1]
EVOLUTION = ROOT / "examples" / "evolution"


def git(cwd, *args, env=None):
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args], cwd=cwd,
                   check=True, stdout=subprocess.DEVNULL, env=env)


def make_project(root: Path, files: int) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    shutil.copy(EVOLUTION / "v1_train.py", root / "train.py")
    for i in range(files):
        (root / "pkg").mkdir(exist_ok=True)
        (root / "pkg" / f"mod{i}.py").write_text(f"VALUE = {i}\n" * 40)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    shutil.copy(EVOLUTION / "v2_train.py", root / "train.py")  # uncommitted, as in the demo
    (root / "notes.txt").write_text("untracked\n")
    return root


def bare_plumbing(root: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        index = os.path.join(tmp, "index")
        shutil.copy2(root / ".git" / "index", index)
        env = {**os.environ, "GIT_INDEX_FILE": index, "GIT_OPTIONAL_LOCKS": "0"}
        git(root, "add", "-A", env=env)
        git(root, "write-tree", env=env)


COLD_SNAPSHOT = """
import sys, time
t = time.perf_counter()
import flordb
from flordb.version import snapshot
snapshot(sys.argv[1], sys.argv[1] + "/.flordb/git")
print(time.perf_counter() - t)
"""
COLD_BARE = """
import sys, time
t = time.perf_counter()
import flordb
sys.path.insert(0, sys.argv[2])
from bench_snapshot import bare_plumbing
from pathlib import Path
bare_plumbing(Path(sys.argv[1]))
print(time.perf_counter() - t)
"""
WHERE_GIT = """
import sys
import flordb as flor
after_import = "git" in sys.modules
flor.log("x", 1.0)  # starts the run: the snapshot is taken here
print(after_import, "git" in sys.modules)
"""


def cold(code: str, root: Path) -> float:
    out = subprocess.run([sys.executable, "-c", code, str(root), str(Path(__file__).parent)], cwd=root,
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer files and repetitions (a smoke run)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--files", type=int, default=None)
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else 15)
    files = args.files if args.files is not None else (20 if args.quick else 300)
    sys.path.insert(0, str(ROOT))
    from flordb.version import snapshot

    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as tmp:
        root = make_project(Path(tmp) / "proj", files)
        print(f"project: examples/evolution v1 committed, v2 uncommitted, {files} modules; {reps} reps;"
              f" load average {os.getloadavg()[0]:.2f}", flush=True)
        snapshot(root, root / ".flordb" / "git")  # warm the caches both sides read
        warm_snap, warm_bare, cold_snap, cold_bare = [], [], [], []
        for _ in range(reps):
            t = time.perf_counter()
            snapshot(root, root / ".flordb" / "git")
            warm_snap.append(time.perf_counter() - t)
            t = time.perf_counter()
            bare_plumbing(root)
            warm_bare.append(time.perf_counter() - t)
            cold_snap.append(cold(COLD_SNAPSHOT, root))
            cold_bare.append(cold(COLD_BARE, root))
        env = {**os.environ, "FLORDB_HOME": str(Path(tmp) / "home")}
        where = subprocess.run([sys.executable, "-c", WHERE_GIT], cwd=root, env=env, check=True,
                               capture_output=True, text=True).stdout.split()

    med = statistics.median
    rows = [
        ("warm snapshot / bare git plumbing", med(warm_snap), med(warm_bare)),
        ("cold: import flordb + snapshot / import flordb + bare plumbing", med(cold_snap), med(cold_bare)),
    ]
    print("\nfigure | flordb (ms) | bare git (ms) | ratio")
    for name, a, b in rows:
        print(f"{name} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f}")
    print(f"GitPython's share of a cold start (difference) | {(med(cold_snap) - med(cold_bare)) * 1e3:.1f} ms")
    print(f"`git` imported by `import flordb`: {where[0]}; after the run's first flor.log (snapshot): {where[1]}")
    print("threads: 1 Python thread each side; git subprocesses one at a time on both")
    return 0 if where[0] == "False" else 1


if __name__ == "__main__":
    sys.exit(main())
