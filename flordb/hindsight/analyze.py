"""Where a statement sits relative to the main loop, and what replay may skip.

DESIGN decision 5: an iteration of the main loop is ``pre-code; nested loop;
post-code``. The nested loop may be skipped by restoring its saved exit state
only when nothing outside it reads what its body changes, other than the
checkpointed objects. Decided here from the patched syntax tree.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from flordb.errors import HindsightError
from flordb.hindsight.locate import FlorNames, flor_names

# Where the statement is; the replay strategy follows from it.
PREFIX, BEFORE, AFTER, NESTED, SUFFIX = "prefix", "before nested loop", "after nested loop", "inside nested loop", "suffix"


@dataclass(frozen=True)
class Placement:
    position: str
    main_loop: str | None  # flor.loop name of the main loop
    skip_nested: bool  # may the nested loop be skipped by restoring its checkpoint?
    reason: str  # why it may not, in words
    nested_loop: str | None = None  # flor.loop name of the nested loop, when there is one

    def describe(self) -> str:
        """In words, for plans: "inside loop 'step'", "after loop 'step' in loop 'epoch'"..."""
        main = f"loop {self.main_loop!r}" if self.main_loop else "the script"
        inner = f"loop {self.nested_loop!r}" if self.nested_loop else "the nested loop"
        return {
            PREFIX: f"before {main}",
            SUFFIX: f"after {main}",
            NESTED: f"inside {inner}",
            BEFORE: f"in {main}, before {inner}" if self.nested_loop else f"in {main}",
            AFTER: f"in {main}, after {inner}",
        }[self.position]


def _flor_loop_name(node: ast.AST, flor: FlorNames) -> str | None:
    """``"epoch"`` for ``for e in flor.loop("epoch", ...)`` or ``with flor.iteration("epoch", i):``."""
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return _flor_iteration_name(node, flor)
    if not isinstance(node, (ast.For, ast.AsyncFor)) or not isinstance(node.iter, ast.Call):
        return None
    call = node.iter
    if flor.call_target(call) != "loop" or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _flor_iteration_name(node: ast.With | ast.AsyncWith, flor: FlorNames) -> str | None:
    """A ``with flor.iteration("name", i):`` block is one iteration of loop ``name``."""
    for item in node.items:
        call = item.context_expr
        if isinstance(call, ast.Call) and flor.call_target(call) == "iteration" and call.args:
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                return first.value
    return None


def _ancestors(tree: ast.AST, lineno: int) -> list[ast.AST]:
    """Nodes enclosing the statement that starts at ``lineno``, outermost first."""
    path: list[ast.AST] = []

    def visit(node: ast.AST) -> bool:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                if child.lineno == lineno:
                    return True
                if child.lineno <= lineno <= (child.end_lineno or child.lineno):
                    path.append(child)
                    if visit(child):
                        return True
                    path.pop()
        return False

    if not visit(tree):
        raise HindsightError(f"no statement starts at line {lineno}")
    return path


def _flor_loops(tree: ast.AST, flor: FlorNames) -> list[tuple[ast.For, str]]:
    return [(n, name) for n in ast.walk(tree) if (name := _flor_loop_name(n, flor))]


def _stored_names(nodes: list[ast.AST]) -> set[str]:
    """Names a block rebinds, or mutates through a method call, item or attribute."""
    out: set[str] = set()
    for root in nodes:
        for n in ast.walk(root):
            if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                out.add(n.id)
            elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, (ast.Store, ast.Del)):
                base = n.value
                while isinstance(base, (ast.Attribute, ast.Subscript)):
                    base = base.value
                if isinstance(base, ast.Name):
                    out.add(base.id)
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
                base = n.func.value
                while isinstance(base, (ast.Attribute, ast.Subscript)):
                    base = base.value
                if isinstance(base, ast.Name):
                    out.add(base.id)  # obj.method(...) may change obj
    return out


def _loaded_names(nodes: list[ast.AST]) -> set[str]:
    return {n.id for root in nodes for n in ast.walk(root) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _module_names(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
    return out


def checkpointed_names(tree: ast.AST, flor: FlorNames) -> set[str]:
    """Variables passed to ``flor.checkpointing(name=var, ...)``: restored on skip."""
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and flor.call_target(n) == "checkpointing":
            out.update(k.value.id for k in n.keywords if isinstance(k.value, ast.Name))
    return out


def placement(source: str, lineno: int, main_loop: str | None = None) -> Placement:
    """Classify the statement at ``lineno`` of ``source`` for replay."""
    tree = ast.parse(source)
    flor = flor_names(tree)
    enclosing = _ancestors(tree, lineno)
    loops = [(n, _flor_loop_name(n, flor)) for n in enclosing]
    loops = [(n, name) for n, name in loops if name]
    if loops:
        main, main_name = loops[0]
    else:
        tops = [(n, name) for n, name in _flor_loops(tree, flor)
                if not any(_flor_loop_name(a, flor) for a in _ancestors(tree, n.lineno))]
        if main_loop is not None:
            tops = [(n, name) for n, name in tops if name == main_loop] or tops
        if not tops:
            return Placement(PREFIX, None, False, "the script has no flor.loop")
        main, main_name = tops[0]
        position = PREFIX if lineno < main.lineno else SUFFIX
        return Placement(position, main_name, *_skip_safety(tree, flor, main))
    if len(loops) > 1:
        return Placement(NESTED, main_name, False, "the statement is inside the nested loop", loops[1][1])
    nested = _first_nested(main, flor)
    if nested is None:
        return Placement(BEFORE, main_name, False, "the main loop has no nested loop")
    position = BEFORE if lineno < nested.lineno else AFTER
    return Placement(position, main_name, *_skip_safety(tree, flor, main), _flor_loop_name(nested, flor))


def nested_skip_safety(source: str, main_loop: str | None) -> tuple[bool, str]:
    """May replay skip the main loop's first nested loop by restoring its checkpoint?

    Independent of where the statement is: warm-up iterations (executed only to
    rebuild state before the first needed one) and the last iteration before a
    suffix skip it only when this holds.
    """
    tree = ast.parse(source)
    flor = flor_names(tree)
    tops = [(n, name) for n, name in _flor_loops(tree, flor)
            if not any(_flor_loop_name(a, flor) for a in _ancestors(tree, n.lineno))]
    if main_loop is not None:
        tops = [(n, name) for n, name in tops if name == main_loop] or tops
    if not tops:
        return False, "the script has no flor.loop"
    return _skip_safety(tree, flor, tops[0][0])


def _first_nested(main: ast.AST, flor: FlorNames) -> ast.For | None:
    found = [n for n in ast.walk(main) if n is not main and _flor_loop_name(n, flor)]
    return min(found, key=lambda n: n.lineno) if found else None


def _skip_safety(tree: ast.AST, flor: FlorNames, main: ast.AST) -> tuple[bool, str]:
    nested = _first_nested(main, flor)
    if nested is None:
        return False, "the main loop has no nested loop"
    if isinstance(nested, (ast.With, ast.AsyncWith)):
        return False, "the nested loop is a flor.iteration block, whose body always runs"
    changed = _stored_names([*nested.body, nested.target]) if isinstance(nested, ast.For) else set()
    outside = [s for s in main.body if s is not nested and not _contains(s, nested)]
    around = [s for s in ast.walk(main) if isinstance(s, ast.stmt) and s is not main
              and not _contains(nested, s) and s is not nested and not _contains(s, nested)]
    # Code after the main loop (in an enclosing `with`, in the function that holds
    # the loop, or at top level) runs after the last skipped nested loop too.
    end = main.end_lineno or main.lineno
    after = [s for s in ast.walk(tree) if isinstance(s, ast.stmt) and s.lineno > end and not _contains(s, main)]
    read = _loaded_names(outside + around) | _loaded_names(after)
    unsafe = (changed & read) - checkpointed_names(tree, flor) - _module_names(tree)
    if unsafe:
        names = ", ".join(sorted(unsafe))
        return False, f"code outside the nested loop reads {names}, which the loop body changes"
    return True, ""


def _contains(outer: ast.AST, inner: ast.AST) -> bool:
    return outer is not inner and any(n is inner for n in ast.walk(outer))
