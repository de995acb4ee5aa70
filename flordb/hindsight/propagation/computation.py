"""Matching blocks by what they compute, when their headers or places changed.

A loop is the same loop when it iterates the same kind of thing and holds
the same computation: the forward pass, ``backward()``, ``optimizer.step()``,
the statements that define what the new statement reads. It may have moved
(module level into ``main()``, ``main()`` into ``main_worker()``, inline into
``train()`` or back) and its header may have changed (``enumerate`` added,
``range(args.start_epoch, args.epochs)``, ``while True``). The evidence is a
multiset of tokens from its body, including the helpers it calls; two
candidates that fit about equally well are a refusal, not a guess.
"""

from __future__ import annotations

import ast
from collections import Counter

from flordb.hindsight.astmatch import ABSTRACT, Pair, abstract_key, align, normalize, shape_key
from flordb.hindsight.propagation.model import Version

LOOPS = (ast.For, ast.AsyncFor, ast.While)
FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
MIN_SCORE = 0.35  # Dice similarity below which a block is not the same computation
IN_PLACE_SCORE = 0.15  # enough for the only loop standing in the same place
MARGIN = 1.25  # the best candidate must beat the runner-up by this factor


def tokens(node: ast.AST, version: Version, depth: int = 2) -> Counter:
    """What a block computes: method calls, library calls and statement keys, through called helpers."""
    cache = version.__dict__.setdefault("_tokens", {})
    key = (id(node), depth)
    if key in cache:
        return cache[key]
    out: Counter = Counter()
    defs = _defs(version)
    body = [node] if not hasattr(node, "body") else _children(node)
    for stmt in body:
        flor_call = _is_flor_call(stmt, version)  # instrumentation differs between versions by design:
        for n in _walk_local(stmt.value if flor_call else stmt):  # only what it computes counts
            if flor_call and n is stmt.value:
                continue
            if isinstance(n, ast.stmt) and not hasattr(n, "body"):
                k = abstract_key(n, version.info) or shape_key(n, version.info)
                if k:
                    out["s:" + k] += 1
            if isinstance(n, ast.Call):
                f = normalize(n.func)
                if isinstance(f, ast.Attribute):
                    out["." + f.attr] += 1
                elif isinstance(f, ast.Name):
                    name = f.id.split(".")[-1]
                    if f.id in version.info.keep:
                        out[name] += 1
                    for fn in defs.get(name, []) if depth > 0 else []:
                        if fn is not node:
                            out.update(tokens(fn, version, depth - 1))
    cache[key] = out
    return out


def _is_flor_call(stmt: ast.stmt, version: Version) -> bool:
    v = stmt.value if isinstance(stmt, ast.Expr) else None
    return isinstance(v, ast.Call) and version.info.flor.call_target(v) is not None


def align_blocks(new_block: list[ast.stmt], old_block: list[ast.stmt], new: Version, old: Version) -> list[Pair]:
    """``align``, plus loops left unpaired matched by what they compute.

    A loop whose header changed (``range(1, args.epochs + 1)`` against
    ``range(args.start_epoch, args.epochs)``) is still the neighbour that
    positions a statement after it. Loops pair only inside the gap between
    the surrounding pairs, so pairs never cross.
    """
    pairs = align(new_block, old_block, new.info, old.info)
    done_new, done_old = {p.new for p in pairs}, {p.old for p in pairs}
    extra = []
    for i, stmt in enumerate(new_block):
        if i in done_new or not isinstance(stmt, LOOPS):
            continue
        lo = max((p.old for p in pairs if p.new < i), default=-1)
        hi = min((p.old for p in pairs if p.new > i), default=len(old_block))
        gap = [old_block[j] for j in range(lo + 1, hi) if j not in done_old]
        found, _ = best_loop(stmt, gap, new, old)
        if found is not None:
            j = next(k for k, o in enumerate(old_block) if o is found)
            extra.append(Pair(i, j, ABSTRACT))
            done_old.add(j)
    return sorted(pairs + extra, key=lambda p: p.new)


def _children(node: ast.AST) -> list[ast.stmt]:
    return [s for f in ("body", "orelse", "handlers", "finalbody") for s in getattr(node, f, []) or []]


def _walk_local(node: ast.AST):
    """ast.walk without descending into nested functions and classes."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        todo.extend(c for c in ast.iter_child_nodes(n) if not isinstance(c, FUNCS + (ast.ClassDef,)))


def _defs(version: Version) -> dict[str, list[ast.AST]]:
    defs = version.__dict__.get("_defs")
    if defs is None:
        defs = {}
        for n in ast.walk(version.tree):
            if isinstance(n, FUNCS):
                defs.setdefault(n.name, []).append(n)
        version.__dict__["_defs"] = defs
    return defs


def similarity(a: Counter, b: Counter) -> float:
    """Dice similarity of two token multisets."""
    total = sum(a.values()) + sum(b.values())
    return 2 * sum((a & b).values()) / total if total else 0.0


def iter_kind(loop: ast.AST) -> str:
    """``range`` for counting loops (``while`` counts too), ``items`` for loops over data."""
    if isinstance(loop, ast.While):
        return "range"
    it = loop.iter
    while isinstance(it, ast.Call) and it.args and _fname(it) in ("enumerate", "tqdm", "loop", "trange"):
        it = it.args[-1] if _fname(it) == "loop" else it.args[0]
    return "range" if isinstance(it, ast.Call) and _fname(it) in ("range", "trange") else "items"


def _fname(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def best_loop(new_loop: ast.AST, candidates: list[ast.AST], new: Version, old: Version,
              min_score: float = MIN_SCORE) -> tuple[ast.AST | None, str]:
    """The old loop computing what ``new_loop`` computes, or (None, why not).

    An old loop over exactly what another loop of the current code iterates
    (the training loader, when the statement is in the validation loop) is
    that other loop's counterpart, never this one's.
    """
    want = tokens(new_loop, new)
    kind = iter_kind(new_loop)
    dumps = _loop_dumps(new)
    own = dumps[id(new_loop)]
    others = set(dumps.values()) - {own}
    scored = []
    for c in candidates:
        if not isinstance(c, LOOPS) or _loop_dumps(old)[id(c)] in others:
            continue
        if isinstance(c, ast.For) and isinstance(new_loop, ast.For) and iter_kind(c) != kind:
            continue
        scored.append((similarity(want, tokens(c, old)), c))
    found, why = _pick(scored, "loop", min_score)
    if found is not None and claimed_by_another(new_loop, found, new, old):
        return None, "the old loop that looks closest computes what another loop of the current code computes"
    return found, why


def claimed_by_another(new_loop: ast.AST, old_loop: ast.AST, new: Version, old: Version) -> bool:
    """Whether another loop of the current code (not one around or inside ``new_loop``) computes
    what ``old_loop`` computes more closely: then ``old_loop`` is that loop's counterpart.

    A validation loop the old version lacks must not land in the training loop.
    """
    mine = similarity(tokens(new_loop, new), tokens(old_loop, old))
    inside = {id(n) for n in ast.walk(new_loop)}
    for other in ast.walk(new.tree):
        if isinstance(other, LOOPS) and id(other) not in inside and not _encloses(other, new_loop):
            if similarity(tokens(other, new), tokens(old_loop, old)) > mine:
                return True
    return False


def _encloses(outer: ast.AST, inner: ast.AST) -> bool:
    return any(n is inner for n in ast.walk(outer))


def best_function(new_fn: ast.AST, candidates: list[ast.AST], new: Version, old: Version) -> ast.AST | None:
    """The old function computing what a renamed ``new_fn`` computes, when one clearly does."""
    names = {n.name for n in ast.walk(new.tree) if isinstance(n, FUNCS)}
    want = tokens(new_fn, new, depth=0)
    scored = [(similarity(want, tokens(c, old, depth=0)), c) for c in candidates
              if isinstance(c, FUNCS) and c.name not in names]
    found, _ = _pick(scored, "function", min_score=0.5)
    return found


def _loop_dumps(version: Version) -> dict[int, str]:
    """What each loop of a version iterates (``for``) or tests (``while``), normalized; cached."""
    dumps = version.__dict__.get("_loop_dumps")
    if dumps is None:
        dumps = version.__dict__["_loop_dumps"] = {
            id(n): _iter_dump(n) for n in ast.walk(version.tree) if isinstance(n, LOOPS)}
    return dumps


def _iter_dump(loop: ast.AST) -> str:
    return ast.dump(normalize(loop.iter if isinstance(loop, (ast.For, ast.AsyncFor)) else loop.test))


def _pick(scored: list, what: str, min_score: float = MIN_SCORE) -> tuple[ast.AST | None, str]:
    scored.sort(key=lambda p: -p[0])
    if not scored or scored[0][0] < min_score:
        return None, f"no {what} in the old version computes what it computes"
    if len(scored) > 1 and scored[1][0] * MARGIN > scored[0][0]:
        lines = ", ".join(str(c.lineno) for _, c in scored[:2])
        return None, f"several {what}s in the old version compute about the same (lines {lines})"
    return scored[0][1], ""


def best_if(new_if: ast.If, field: str, candidates: list[ast.stmt], in_place: list[ast.stmt],
            new: Version, old: Version) -> ast.If | None:
    """The old ``if`` playing the same role: same branch holding the same computation.

    Failing a clear match by content anywhere in the block, the only ``if``
    standing in the same place (between the counterparts of its
    neighbours) is taken when its branch shares some of the computation and
    its test reads some of the same names: a rewritten test
    (``if not best or loss < best`` against ``if best is None or loss < best``)
    over a partly rewritten body.
    """
    found = _best_if_by_content(new_if, field, candidates, new, old)
    if found is not None:
        return found
    here = [c for c in in_place if isinstance(c, ast.If) and getattr(c, field)]
    if len(here) != 1:
        return None
    want, got = _branch_tokens(new_if, field, new), _branch_tokens(here[0], field, old)
    new_names = {n.id for n in ast.walk(new_if.test) if isinstance(n, ast.Name)}
    old_names = {n.id for n in ast.walk(here[0].test) if isinstance(n, ast.Name)}
    if similarity(want, got) > 0 and new_names & old_names:
        return here[0]
    return None


def _branch_tokens(node: ast.If, field: str, version: Version) -> Counter:
    out = Counter()
    for s in getattr(node, field):
        out.update(tokens(s, version))
    return out


def _best_if_by_content(new_if: ast.If, field: str, candidates: list[ast.stmt], new: Version,
                        old: Version) -> ast.If | None:
    want = Counter()
    for s in getattr(new_if, field):
        want.update(tokens(s, new))
    scored = []
    for c in candidates:
        if isinstance(c, ast.If) and getattr(c, field):
            got = Counter()
            for s in getattr(c, field):
                got.update(tokens(s, old))
            scored.append((similarity(want, got), c))
    scored.sort(key=lambda p: -p[0])
    if not scored or scored[0][0] < 0.5:
        return None
    if len(scored) > 1 and scored[1][0] * MARGIN > scored[0][0]:
        return None
    return scored[0][1]
