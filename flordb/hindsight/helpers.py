"""New statements in a project's helper modules: ``model.py`` logs in ``forward()``, ``train.py`` runs.

A run records the script it ran (``train.py``); the statement to replay may be
in a module that script imports from the same project (``from model import
Net``). Such a statement belongs to the runs of every recorded script that
imports its file, directly or through other project modules. Its file is
patched in each historical version like the script would be; the analysis does
not follow calls into other files, so the plan re-executes (the nested loop
runs) and says so, and the statement is logged wherever it runs: a replay
that starts at the first iteration logs the code before the main loop too,
and one that reaches the last iteration runs and logs the code after it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from flordb.hindsight.analyze import NESTED, Placement


def imported_files(work_tree: Path, script: str) -> set[str]:
    """Project files (relative paths) that ``script`` imports, directly or through other project modules."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        rel = todo.pop()
        try:
            tree = ast.parse((work_tree / rel).read_text())
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        here = (work_tree / rel).parent
        for node in ast.walk(tree):
            for found in _targets(node, here, work_tree):
                if found not in seen and found != script:
                    seen.add(found)
                    todo.append(found)
    return seen


def _targets(node: ast.AST, here: Path, root: Path) -> list[str]:
    """Project files an import statement may load (searched next to the importer and at the project root)."""
    if isinstance(node, ast.Import):
        dotted = [a.name for a in node.names]
        bases = [here, root]
    elif isinstance(node, ast.ImportFrom):
        mod = node.module or ""
        if node.level:
            base = here
            for _ in range(node.level - 1):
                base = base.parent
            bases = [base]
        else:
            bases = [here, root]
        dotted = [f"{mod}.{a.name}".strip(".") for a in node.names] + ([mod] if mod else [])
    else:
        return []
    out = []
    for name in dotted:
        parts = name.split(".")
        for base in bases:
            packages = [base.joinpath(*parts[:k], "__init__.py") for k in range(1, len(parts))]
            for cand in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py"), *packages):
                try:
                    if cand.is_file():
                        out.append(str(cand.resolve().relative_to(root.resolve())))
                except (ValueError, OSError):
                    continue
    return out


def attach_helpers(groups: dict, found: dict, names: list[str], scripts: list[str], work_tree: Path) -> dict:
    """Give each recorded script the statements of ``names`` that are in modules it imports.

    ``groups``: script -> statements found in the script itself; ``found``: name -> the
    statement the current code has. A name no script logs itself goes to the scripts importing its file.
    """
    covered = {st.name for sts in groups.values() for st in sts}
    imports: dict[str, set[str]] = {}
    for name in names:
        st = found.get(name)
        if st is None or name in covered or st.script in scripts:
            continue
        for script in scripts:
            if script not in imports:
                imports[script] = imported_files(work_tree, script)
            if st.script in imports[script]:
                groups.setdefault(script, []).append(st)
    return groups


def helper_placement(st, script: str, main_loop: str | None, nested_loop: str | None) -> Placement:
    """Where a statement in another file of the project sits: unknown to the analysis, so re-executed."""
    return Placement(NESTED, main_loop, False,
                     f"the statement is in {st.script}, a module {script} imports: its place is not analysed,"
                     " so the nested loop is re-executed", nested_loop, f"{st.script}:{st.lineno}")


def with_flor_import(old: str, current: str) -> str:
    """``old`` with the current file's ``import flordb ...`` line added when the old version has none.

    A helper module often imports flordb only once it logs something; the line
    goes after the module docstring and ``from __future__`` imports.
    """
    def flor_imports(tree: ast.Module) -> list[ast.stmt]:
        return [n for n in tree.body if (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "flordb"
                                                                          for a in n.names))
                or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "flordb")]

    try:
        old_tree, new_tree = ast.parse(old), ast.parse(current)
    except SyntaxError:
        return old
    wanted = flor_imports(new_tree)
    if flor_imports(old_tree) or not wanted:
        return old
    after = 0
    for n in old_tree.body:
        doc = isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
        if doc and n is old_tree.body[0] or (isinstance(n, ast.ImportFrom) and n.module == "__future__"):
            after = n.end_lineno or after
        else:
            break
    lines = old.splitlines(keepends=True)
    added = "".join(ast.get_source_segment(current, n) + "\n" for n in wanted)
    return "".join(lines[:after]) + added + "".join(lines[after:])
