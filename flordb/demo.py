"""``flordb demo``: the whole story on synthetic data, in about a minute.

It records runs of three versions of a training script (a variable renamed,
a helper extracted, the step loop rewritten, a learning-rate schedule
added), then adds one ``flor.log`` line to the current script and asks a
query that names the never-recorded column: FlorDB places the statement
into every old version, replays the runs from their checkpoints and answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from flordb.errors import ConfigError

EPOCHS = 4
# (version file, runs as --kwargs lists)
HISTORY = [
    ("v1_train.py", [["lr=0.001"], ["lr=0.01"]]),
    ("v2_train.py", [["lr=0.003"]]),
    ("v3_train.py", [["lr=0.001"], ["lr=0.003"]]),
]
CURRENT = "v4_train.py"
QUERY = ("SELECT left(version, 7) AS version, lr, epoch, avg(loss) AS loss, avg(grad_norm) AS grad_norm"
         " FROM logs WHERE epoch >= 2 GROUP BY ALL ORDER BY ALL")


def step(text: str) -> None:
    print(f"\n== {text}", file=sys.stderr, flush=True)


def shell(text: str) -> None:
    print(f"$ {text}", file=sys.stderr, flush=True)


def example(name: str) -> str:
    return (resources.files("flordb.examples") / "evolution" / name).read_text()


def _git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=FlorDB demo", "-c", "user.email=demo@flordb.invalid", *args],
                   cwd=project, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def record(project: Path, kwargs: list[str]) -> None:
    env = {**os.environ, "FLORDB_PROGRESS": "0"}
    env.pop("FLORDB_HOME", None)
    subprocess.run([sys.executable, "train.py", "--kwargs", f"epochs={EPOCHS}", *kwargs], cwd=project,
                   env=env, check=True, stdout=subprocess.DEVNULL)


def run_demo(directory: str | None = None) -> None:
    from flordb.tabular import render
    from flordb.api import query
    from flordb.sql.runs import list_runs
    from flordb.store.layout import locate

    project = Path(directory or tempfile.mkdtemp(prefix="flordb-demo-")).resolve()
    project.mkdir(parents=True, exist_ok=True)
    if any(project.iterdir()):
        raise ConfigError(f"demo directory {project} is not empty; pick a new one with --dir")
    t_start = time.perf_counter()
    step(f"A project at {project}: train.py, committed to git")
    (project / "train.py").write_text(example(HISTORY[0][0]))
    _git(project, "init", "-q")
    _git(project, "add", "train.py")
    _git(project, "commit", "-q", "-m", "first version")
    for i, (version, runs) in enumerate(HISTORY):
        if i:
            step(f"The script evolves (version {i + 1}, uncommitted): {example(version).splitlines()[0].strip(chr(34))}")
            (project / "train.py").write_text(example(version))
        for kw in runs:
            shell(f"python train.py --kwargs epochs={EPOCHS} {' '.join(kw)}")
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda kw: record(project, kw), runs))
    layout = locate(project)
    step("Every run was versioned and indexed")
    shell("flordb runs")
    print(render(list_runs(layout=layout), "table", width=10_000), flush=True)

    step("Add one statement to the current train.py, inside the step loop")
    current = example(CURRENT)
    line = next(l for l in current.splitlines() if '"grad_norm"' in l)
    print(f"+ {line.strip()}", file=sys.stderr)
    (project / "train.py").write_text(current)

    step("Ask for the column no run recorded; FlorDB plans, replays and answers")
    shell(f'flordb query "{QUERY}" --yes')
    df = query(QUERY, replay="yes", layout=layout)
    print(render(df, "table", width=10_000), flush=True)
    missing = int(df["grad_norm"].isna().sum())
    step(f"Done in {time.perf_counter() - t_start:.0f} s. grad_norm filled for {len(df) - missing} of {len(df)} rows.")
    print(f"Try it yourself:  cd {project} && {flordb_command()} shell", file=sys.stderr)


def flordb_command() -> str:
    """How to call this very `flordb` from any shell: its bare name only when it is on PATH."""
    import shutil

    here = Path(sys.executable).with_name("flordb")
    found = shutil.which("flordb")
    if found and here.exists() and Path(found).resolve() == here.resolve():
        return "flordb"
    return str(here) if here.exists() else f"{sys.executable} -m flordb"
