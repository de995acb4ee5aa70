"""Step 5: between which old statements it goes, unless the old block already has it."""

from __future__ import annotations

import ast
import copy

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import abstract_key, exact_key, read_refs
from flordb.hindsight.propagation.computation import align_blocks
from flordb.hindsight.locate import find_log_statements, literal_name, log_call
from flordb.hindsight.propagation.model import Frame, Version, first_line


def already_present(stmt: ast.stmt, renames: dict[str, str], frame: Frame, new: Version, old: Version) -> bool:
    """Whether the old block already has the statement, up to renaming.

    A log of the same name anywhere else in the old file is refused: two
    statements writing one column would make replayed values ambiguous.
    """
    adapted = ast.dump(adapt(stmt, renames))
    if any(ast.dump(s) == adapted for s in frame.block):
        return True
    call = log_call(stmt, new.info.flor)
    name = literal_name(call) if call else None
    if name is not None:
        existing = find_log_statements(old.source, name)
        if existing:
            raise PropagationError(
                f"the old version already logs '{name}' at line {existing[0].lineno} "
                f"('{existing[0].text.strip()}'), differently or elsewhere")
    return False


def adapt(stmt: ast.stmt, renames: dict[str, str]) -> ast.stmt:
    """A copy of the statement as it reads after renaming, for comparison."""
    node = copy.deepcopy(stmt)
    refs = {id(n): text for n, text in read_refs(node) if text in renames}

    class Rename(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name) -> ast.expr:
            return ast.parse(renames[refs[id(n)]], mode="eval").body if id(n) in refs else n

        def visit_Attribute(self, n: ast.Attribute) -> ast.expr:
            if id(n) in refs:
                return ast.parse(renames[refs[id(n)]], mode="eval").body
            self.generic_visit(n)
            return n

    return Rename().visit(node)


# ---------------------------------------------------------------- step 6: the gap


def choose_gap(new_block: list[ast.stmt], t: int, old_block: list[ast.stmt],
               new: Version, old: Version, edges: bool = True) -> int:
    """Index in ``old_block`` before which the statement goes.

    The statement follows its previous neighbour if the old code has it,
    else precedes its next one. The block's start and end count as
    neighbours only when the old block is the known counterpart (``edges``).
    Failing both, the nearest matched statements on either side must leave
    no old code between them whose order relative to the statement is unknown.
    """
    inlined = inline_new_helpers(new_block, t, new, old)
    if inlined is not None:
        return choose_gap(inlined, inlined.index(new_block[t]), old_block, new, old, edges)
    others = new_block[:t] + new_block[t + 1:]
    to_old = {(p.new if p.new < t else p.new + 1): p.old for p in align_blocks(others, old_block, new, old)}
    last = len(new_block) - 1
    before = [i for i in to_old if i < t]
    after = [i for i in to_old if i > t]
    lo = to_old[max(before)] + 1 if before else 0  # the old statements the gap may be in: lo..hi
    hi = to_old[min(after)] if after else len(old_block)
    if t - 1 in to_old:
        return to_old[t - 1] + 1
    nested = t > 0 and _inside_condition(new_block[t - 1], old_block[lo:hi], new, old)
    if nested is not None and nested is not False:
        return lo + nested + 1
    defined = t > 0 and _after_definitions(new_block[t - 1], new_block[t], old_block[lo:hi])
    if defined is not None and defined is not False:
        return lo + defined + 1
    if t == 0 and edges:
        return 0
    if t + 1 in to_old:
        return to_old[t + 1]
    nested = t < last and _inside_condition(new_block[t + 1], old_block[lo:hi], new, old)
    if nested is not None and nested is not False:
        return lo + nested
    if t == last and edges:
        return len(old_block)
    low = lo if before or edges else None
    high = hi if after or edges else None
    if low is not None and low == high:
        return low
    def show(i):
        return f"'{ast.unparse(new_block[i]).splitlines()[0]}'"
    around = " and ".join(show(i) for i in (t - 1, t + 1) if 0 <= i <= last) or "none"
    raise PropagationError(
        f"the statements next to it in the current code ({around}) have no counterpart in the old "
        "version, so its position among the old statements is unclear")


def _inside_condition(neighbour: ast.stmt, window: list[ast.stmt], new: Version, old: Version) -> int | None:
    """Index in ``window`` of the only ``if``/``with``/``try`` whose body holds ``neighbour``'s counterpart.

    The current code runs the neighbour unconditionally where the old code
    ran it under a condition (``if scaler: scaler.step(optimizer) else:
    optimizer.step()``): the statement stays unconditional, next to the
    whole block. Loops do not count: after a loop is not next to its body.
    """
    keys = {exact_key(neighbour), abstract_key(neighbour, new.info)} - {None}
    hits = []
    for j, s in enumerate(window):
        if isinstance(s, (ast.If, ast.With, ast.Try)):
            inner = [n for n in ast.walk(s) if isinstance(n, ast.stmt) and n is not s
                     and not isinstance(n, (ast.For, ast.AsyncFor, ast.While))]
            if any({exact_key(n), abstract_key(n, old.info)} & keys for n in inner):
                hits.append(j)
    return hits[0] if len(hits) == 1 else None


def _after_definitions(neighbour: ast.stmt, stmt: ast.stmt, window: list[ast.stmt]) -> int | None:
    """Index in ``window`` of the last old statement binding, on every path, what ``neighbour``
    computes for the statement (``lr = get_lr(it) if decay_lr else base`` against an
    ``if decay_lr: lr = ... else: lr = ...`` block): the statement logs that value once it exists."""
    from flordb.hindsight.propagation.check import definite

    computed = definite(neighbour)
    reads = {text for _, text in read_refs(stmt)}
    wanted = (computed or set()) & reads if computed is not None else set()
    if not wanted:
        return None
    hits = [j for j, s in enumerate(window) if (got := definite(s)) is not None and wanted <= got]
    return hits[-1] if hits else None


def inline_new_helpers(block: list[ast.stmt], t: int, new: Version, old: Version) -> list[ast.stmt] | None:
    """The block with the previous statement's new helper calls replaced by the helpers' bodies.

    When the current code moved the training step into helpers
    (``loss = train_step(...)``), the old code does that work inline and the
    statement belongs after the last of it, not after whatever line of it
    happens to look like the call. None when there is nothing to inline.
    """
    if t == 0:
        return None
    old_defs = {n.name for n in ast.walk(old.tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    new_defs = {n.name: n for n in ast.walk(new.tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def expand(stmt: ast.stmt, depth: int) -> list[ast.stmt]:
        calls = [c.func.id for c in ast.walk(stmt) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)]
        helpers = [new_defs[c] for c in calls if c in new_defs and c not in old_defs]
        if not helpers or depth > 2:
            return [stmt]
        out = []
        for h in helpers:
            for s in h.body:
                if isinstance(s, ast.Return):
                    out += expand(s, depth + 1)[:-1] if s.value is not None else []
                elif not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)):
                    out += expand(s, depth + 1)
        return out

    body = expand(block[t - 1], 0)
    if body == [block[t - 1]]:
        return None
    return block[:t - 1] + body + block[t:]


def insertion_line(frame: Frame, gap: int, old: Version) -> int:
    """The old line after which the new line goes (0 = before the first line)."""
    block = frame.block
    if gap == 0:
        return first_line(block[0]) - 1
    line = block[gap - 1].end_lineno
    if gap < len(block) and first_line(block[gap]) == line:
        raise PropagationError(
            f"line {line} of the old version holds several statements; "
            "the statement would have to go in the middle of it")
    return line


