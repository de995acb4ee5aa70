"""Step 2: the enclosing functions, loops and blocks of the statement in the old code."""

from __future__ import annotations

import ast

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import COMPOUND, abstract_dump, align, core_iter, loop_name
from flordb.hindsight.propagation.computation import (
    IN_PLACE_SCORE, LOOPS, best_function, best_if, best_loop, claimed_by_another, tokens,
)
from flordb.hindsight.propagation.model import Frame, Match, Version, describe

FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def match_frames(frames: list[Frame], new: Version, old: Version) -> Match:
    """Find each enclosing block of the statement in the old code, outermost first.

    A wrapper the old code lacks (``with flor.checkpointing``, ``try``, a
    ``__main__`` guard) dissolves into its parent block; a function the old
    code lacks (an extracted helper) is searched for by content later. A loop
    whose header changed or that moved is found by what it computes; an
    ``if`` by the role of its branch; a condition only the current code has
    dissolves when the code it guards is unconditional in the old version.
    Anything else the old code lacks means there is no place with the same
    meaning, so we refuse.
    """
    match = Match(pairs=[(frames[0], Frame(old.tree, "body"))], old_frame=Frame(old.tree, "body"),
                  region=old.tree, new_block=frames[0].block)
    for k, frame in enumerate(frames[1:], start=1):
        found = find_counterpart(frame.node, match, new, old)
        why = ""
        if found is None and isinstance(frame.node, LOOPS):
            found, why = loop_by_computation(frame.node, match, new, old)
        elif found is None and isinstance(frame.node, ast.If) and match.old_frame is not None:
            found = best_if(frame.node, frame.field, *_untaken(frame.node, match, new, old), new, old)
        elif found is None and isinstance(frame.node, FUNCS):
            found = best_function(frame.node, [n for n in ast.walk(old.tree) if isinstance(n, FUNCS)], new, old)
        if found is not None:
            if not getattr(found, frame.field, None):
                raise PropagationError(
                    f"{describe(found)} in the old version has no '{frame.field}' block to hold the statement")
            old_frame = Frame(found, frame.field)
            match.pairs.insert(0, (frame, old_frame))
            match.old_frame, match.region, match.new_block = old_frame, found, frame.block
        elif is_wrapper(frame) or guard_only_here(frame, frames[k + 1:], match, new, old):
            i = next(k for k, s in enumerate(match.new_block) if s is frame.node)
            match.new_block = match.new_block[:i] + frame.block + match.new_block[i + 1:]
        elif isinstance(frame.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            match.old_frame, match.new_block = None, frame.block
            match.searched = frame
            match.dropped.append(frame.node)
        else:
            raise PropagationError(
                f"{describe(frame.node)} that encloses the statement in the current code "
                f"has no counterpart in the old version{': ' + why if why else ''}")
    return match


def loop_by_computation(loop: ast.AST, match: Match, new: Version, old: Version) -> tuple[ast.AST | None, str]:
    """The old loop that computes what ``loop`` computes: nearby first, then anywhere in the old file."""
    taken = {id(o.node) for _, o in match.pairs}
    near = [n for n in ast.walk(match.region) if n is not match.region] + called_statements(match.region, old)
    found, why = best_loop(loop, [n for n in near if id(n) not in taken], new, old)
    if found is not None or why.startswith("several"):
        return found, why
    if match.old_frame is not None and any(s is loop for s in match.new_block):
        here = [s for s in _untaken(loop, match, new, old)[1] if isinstance(s, LOOPS)]
        if len(here) == 1:  # the only loop in the same place, rewritten more than its content shows
            found, _ = best_loop(loop, here, new, old, min_score=IN_PLACE_SCORE)
            if found is not None:
                return found, ""
    ancestors, node = set(), match.region
    while node is not None:
        ancestors.add(id(node))
        node = old.parents.get(node)
    anywhere = [n for n in ast.walk(old.tree) if id(n) not in ancestors and id(n) not in taken]
    return best_loop(loop, anywhere, new, old)


def _untaken(node: ast.AST, match: Match, new: Version, old: Version) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """Old statements of the matched block that no other new statement pairs with, and those of
    them in the same place: between the old counterparts of ``node``'s paired neighbours."""
    direct = list(match.old_frame.block)
    i = next(k for k, s in enumerate(match.new_block) if s is node)
    pairs = [p for p in align(match.new_block, direct, new.info, old.info) if p.new != i]
    taken = {p.old for p in pairs}
    lo = max((p.old for p in pairs if p.new < i), default=-1)
    hi = min((p.old for p in pairs if p.new > i), default=len(direct))
    untaken = [s for j, s in enumerate(direct) if j not in taken]
    return untaken, [s for j, s in enumerate(direct) if lo < j < hi and j not in taken]


def guard_only_here(frame: Frame, inner: list[Frame], match: Match, new: Version, old: Version) -> bool:
    """Whether an ``if`` only the current code has guards code that the old block runs unconditionally.

    A logging block wrapped in a new condition (``if step % log_every == 0``)
    keeps its meaning in the old version without the condition: the values
    are the same, only logged more often. The evidence is that the code
    the condition guards sits directly in the old block. The same holds for
    an ``else`` branch keeping the old code when a new alternative was added
    (``if args.model == "Transformer": ... else: <the old RNN step>``).
    """
    node = frame.node
    if not isinstance(node, ast.If) or frame.field not in ("body", "orelse") or match.old_frame is None or inner:
        return False
    others = [s for s in frame.block if not _is_log_only(s, new)]
    if not others:
        return frame.field == "body" and _is_cadence(node.test)
    want = tokens(ast.Module(body=others, type_ignores=[]), new, depth=0)
    strong = [p for p in align(others, match.old_frame.block, new.info, old.info) if p.strength != "shape"]
    return 2 * len(strong) >= len(others) and sum(want.values()) > 0


def _is_log_only(stmt: ast.stmt, new: Version) -> bool:
    v = stmt.value if isinstance(stmt, ast.Expr) else None
    return isinstance(v, ast.Call) and new.info.flor.call_target(v) == "log"


def _is_cadence(test: ast.expr) -> bool:
    """``i % k == 0`` and the like: a condition that only thins out when something happens."""
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) for n in ast.walk(test))


def is_wrapper(frame: Frame) -> bool:
    """Blocks whose absence in the old code does not change when the statement runs."""
    node = frame.node
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return True
    if isinstance(node, ast.Try):
        return frame.field == "body"
    if isinstance(node, ast.If) and frame.field == "body":
        return ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"'
    return False


def frame_strength(new_node: ast.AST, old_node: ast.AST, new: Version, old: Version) -> int:
    """How surely an old compound statement is the counterpart of a new one: 3 sure, 0 no.

    Function names and ``flor.loop`` names are literal anchors (3); identical
    headers are good (2); headers equal up to renaming are weak (1), trusted
    only among the direct children of an already matched block.
    """
    same_kind = type(new_node) is type(old_node)
    if not same_kind or not isinstance(new_node, COMPOUND):
        return 0
    if isinstance(new_node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return 3 if new_node.name == old_node.name else 0
    if isinstance(new_node, (ast.For, ast.AsyncFor)):
        new_name, old_name = loop_name(new_node, new.info), loop_name(old_node, old.info)
        if new_name and new_name == old_name:
            return 3
        if old_name:
            return 0  # a differently named loop, or instrumentation the new code dropped
        new_parts, old_parts = [core_iter(new_node, new.info)[1]], [core_iter(old_node, old.info)[1]]
    elif isinstance(new_node, (ast.With, ast.AsyncWith)):
        new_parts, old_parts = [i.context_expr for i in new_node.items], [i.context_expr for i in old_node.items]
    else:
        new_parts = [getattr(new_node, "test", None) or getattr(new_node, "subject", None)]
        old_parts = [getattr(old_node, "test", None) or getattr(old_node, "subject", None)]
        if new_parts == [None]:
            return 1  # try blocks: only their position tells them apart
    if [ast.dump(n) for n in new_parts] == [ast.dump(n) for n in old_parts]:
        return 2
    return 1 if abstract_dump(new_parts, new.info.keep) == abstract_dump(old_parts, old.info.keep) else 0


def find_counterpart(node: ast.AST, match: Match, new: Version, old: Version) -> ast.AST | None:
    """The old compound statement matching ``node``, or None.

    Literal anchors (function and ``flor.loop`` names) are trusted anywhere:
    among the children of the matched old block, under the last matched
    construct, or in functions it calls (code the current version inlined).
    Weaker evidence is trusted only among the direct children: the
    statement the block alignment pairs with ``node``, else an identical
    header that no other new statement claims. Two equally good candidates
    are a refusal.
    """
    direct = list(match.old_frame.block) if match.old_frame else []
    region = [n for n in ast.walk(match.region) if isinstance(n, ast.stmt) and n is not match.region]
    for candidates in (direct, region, called_statements(match.region, old)):
        found = _unique(node, [o for o in candidates if frame_strength(node, o, new, old) == 3])
        if found is not None:
            return found
    if not direct:
        return None
    paired = {p.new: direct[p.old] for p in align(match.new_block, direct, new.info, old.info)}
    i = next(k for k, s in enumerate(match.new_block) if s is node)
    if i in paired and frame_strength(node, paired[i], new, old) > 0:
        weak = frame_strength(node, paired[i], new, old) == 1 and isinstance(node, LOOPS)
        if not (weak and claimed_by_another(node, paired[i], new, old)):
            return paired[i]
    taken = set(map(id, paired.values()))
    return _unique(node, [o for o in direct if id(o) not in taken and frame_strength(node, o, new, old) == 2])


def _unique(node: ast.AST, hits: list[ast.AST]) -> ast.AST | None:
    if len(hits) > 1:
        lines = ", ".join(str(h.lineno) for h in hits)
        raise PropagationError(
            f"{describe(node)} that encloses the statement matches several places "
            f"in the old version (lines {lines})")
    return hits[0] if hits else None


def called_statements(region: ast.AST, old: Version) -> list[ast.stmt]:
    """Statements of old functions reachable by calls from ``region``.

    When the current code inlines a helper the old code called, the anchors
    are inside that helper. Calls are resolved by name only (``f(...)`` and
    ``self.f(...)``), which is enough for training scripts.
    """
    cache = old.__dict__.setdefault("_called", {})
    if id(region) not in cache:
        cache[id(region)] = _called_statements(region, old)
    return cache[id(region)]


def _called_statements(region: ast.AST, old: Version) -> list[ast.stmt]:
    defs: dict[str, list[ast.AST]] = {}
    for n in ast.walk(old.tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs.setdefault(n.name, []).append(n)
    inside = set(ast.walk(region))
    reached: list[ast.AST] = []
    todo = [region]
    while todo:
        for call in (c for c in ast.walk(todo.pop()) if isinstance(c, ast.Call)):
            f = call.func
            name = f.id if isinstance(f, ast.Name) else f.attr if (
                isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self") else None
            for fn in defs.get(name, []):
                if fn not in inside and fn not in reached:
                    reached.append(fn)
                    todo.append(fn)
    return [n for fn in reached for n in ast.walk(fn) if isinstance(n, ast.stmt)]


