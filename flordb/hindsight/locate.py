"""Find ``flor.log`` statements in Python source.

Hindsight logging starts from a column name the user asked for; the statement
that logs it lives somewhere in the current code. This module answers "where",
and also tells the propagation pass which local names mean flordb, because a
script may say ``flor.log``, ``flordb.log`` or a bare ``log`` imported from
flordb, and old versions may spell it differently from the current one.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flordb.hindsight.tasks import Statement

# Names assumed to mean flordb even without a visible import: snippets and
# scripts that receive ``flor`` indirectly still deserve to be found.
ASSUMED_MODULE_NAMES = frozenset({"flor", "flordb"})


@dataclass(frozen=True)
class LogStatement:
    """One ``X.log("<name>", value)`` statement, with enough text to show a user."""

    name: str
    lineno: int
    end_lineno: int
    text: str
    expr_text: str


@dataclass(frozen=True)
class FlorNames:
    """Which local names refer to flordb in one module.

    ``imported_modules`` are aliases the module really binds by ``import``;
    ``modules`` adds the assumed spellings. ``functions`` maps a local name to
    the flordb attribute it was imported as (``from flordb import log as L``
    gives ``{"L": "log"}``).
    """

    modules: frozenset[str]
    imported_modules: frozenset[str]
    functions: dict[str, str] = field(default_factory=dict)

    def call_target(self, call: ast.Call) -> str | None:
        """The flordb attribute a call invokes (``"log"``, ``"loop"``...), else None."""
        func = call.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id in self.modules:
                return func.attr
        if isinstance(func, ast.Name):
            return self.functions.get(func.id)
        return None

    def refers_to_flordb(self, name: str) -> bool:
        """Whether a bare name means flordb or one of its functions."""
        return name in self.modules or name in self.functions


def flor_names(tree: ast.AST) -> FlorNames:
    """Collect the aliases a module uses for flordb, wherever it imports them."""
    imported: set[str] = set()
    functions: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "flordb":
                    imported.add(alias.asname or "flordb")
                elif alias.name.startswith("flordb.") and not alias.asname:
                    imported.add("flordb")
        elif isinstance(node, ast.ImportFrom) and node.module == "flordb" and not node.level:
            for alias in node.names:
                if alias.name != "*":
                    functions[alias.asname or alias.name] = alias.name
    return FlorNames(
        modules=frozenset(imported | ASSUMED_MODULE_NAMES),
        imported_modules=frozenset(imported),
        functions=functions,
    )


def literal_name(call: ast.Call) -> str | None:
    """The literal first argument (or ``name=``) of a flordb call, else None.

    Only literals count: a computed name cannot be matched to a SQL column
    without running the code.
    """
    arg = call.args[0] if call.args else _keyword(call, "name")
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def log_call(stmt: ast.stmt, names: FlorNames) -> ast.Call | None:
    """The flordb ``log`` call a statement consists of, else None.

    ``flor.log`` returns its value, so ``v = flor.log(...)`` is a log
    statement too; a log call buried inside another expression is not, since
    propagation moves whole statements.
    """
    value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign, ast.AnnAssign)) else None
    if isinstance(value, ast.Call) and names.call_target(value) == "log":
        return value
    return None


def find_log_statements(source: str, name: str | None = None) -> list[LogStatement]:
    """Every literal-named log statement in ``source`` (only ``name`` if given).

    Callers scan whole repositories, so a file that does not parse yields no
    statements rather than an error.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    names = flor_names(tree)
    found = []
    for stmt in ast.walk(tree):
        if not isinstance(stmt, ast.stmt):
            continue
        call = log_call(stmt, names)
        if call is None:
            continue
        logged = literal_name(call)
        if logged is None or (name is not None and logged != name):
            continue
        value = call.args[1] if len(call.args) > 1 else _keyword(call, "value")
        found.append(
            LogStatement(
                name=logged,
                lineno=stmt.lineno,
                end_lineno=stmt.end_lineno or stmt.lineno,
                text=textwrap.dedent(ast.get_source_segment(source, stmt, padded=True) or ""),
                expr_text=(ast.get_source_segment(source, value) or "") if value else "",
            )
        )
    return sorted(found, key=lambda s: (s.lineno, s.end_lineno))


def script_statements(work_tree: Path, names: list[str], scripts: list[str]) -> dict[str, list[Statement]]:
    """For each recorded script whose current text logs some of ``names``: those statements.

    Here, not in :mod:`flordb.hindsight.plan`, so that a query checking for gaps imports no planner.
    """
    from flordb.hindsight.tasks import Statement

    out: dict[str, list[Statement]] = {}
    for script in scripts:
        try:
            source = (work_tree / script).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        hits: dict[str, Statement] = {}
        for st in find_log_statements(source):
            if st.name in names and st.name not in hits:
                hits[st.name] = Statement(st.name, script, st.lineno, st.text)
        if hits:
            out[script] = [hits[n] for n in names if n in hits]
    return out
