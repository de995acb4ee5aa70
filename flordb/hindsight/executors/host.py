"""A replay worker started before its task is known: it imports the script's libraries while the plan is made.

A worker's start-up is mostly the script importing its libraries (``import
torch`` alone takes seconds), and the query process spends a good part of a
second planning before the first task exists. So ``flordb replay`` and a
query that fills a column start one host process as planning begins
(:meth:`flordb.hindsight.executors.local.LocalExecutor.prestart`): it imports
the third-party modules the script imports at its top level, then waits on
stdin for one task and runs the script as ``python SCRIPT ARGS`` would, as
``__main__``, in the task's directory, with the task's environment and its
output going to the task's log. A host whose thread count does not match the
first task, or that is never used, is stopped. ``FLORDB_PRESTART=0`` turns it
off (every task then starts as ``python SCRIPT``).

Run as ``python -m flordb.hindsight.executors.host MODULE ...``; reads one JSON
line ``{"argv": [script, *args], "cwd": ..., "env": {...}, "log": ...}``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path


def library_imports(script: Path, project: Path) -> list[str]:
    """Modules a script imports at its top level from outside ``project`` (torch, numpy, ...), in order.

    Only module-level statements (and those inside top-level ``try``/``if``):
    an import inside a function may never run. Project modules, FlorDB and
    relative imports are left out: they are the version's own code.
    """
    try:
        tree = ast.parse(script.read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []

    def visit(body: list) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.If) and not _is_main_guard(node):
                visit(node.body)

    visit(tree.body)
    out = []
    for name in dict.fromkeys(names):
        top = name.split(".")[0]
        if top in ("flordb", "__future__") or _in_project(top, script.parent, project):
            continue
        try:
            if importlib.util.find_spec(top) is None:
                continue
        except (ImportError, ValueError):
            continue
        out.append(name)
    return out


def _is_main_guard(node: ast.If) -> bool:
    return "__main__" in ast.unparse(node.test)


def _in_project(top: str, here: Path, project: Path) -> bool:
    return any((d / top).is_dir() or (d / f"{top}.py").is_file() for d in {here, project})


def main(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 the script's own import will say what is wrong
            pass
    line = sys.stdin.readline()
    if not line.strip():
        return  # not used: the replay needed no host after all
    task = json.loads(line)
    fd = os.open(task["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(task["env"])
    os.chdir(task["cwd"])
    script = os.path.abspath(task["argv"][0])
    sys.argv = [script, *task["argv"][1:]]
    sys.path[0] = os.path.dirname(script)  # as `python SCRIPT` has it
    import runpy

    runpy.run_path(script, run_name="__main__")  # its exceptions and exit code are the process's, as for a script


if __name__ == "__main__":
    main(sys.argv[1:])
