"""Step 4: what the old code at the insertion point calls each name the statement reads."""

from __future__ import annotations

import ast
from collections import Counter

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import add_votes, call_site_pairs, collect_votes, name_pairs, read_refs
from flordb.hindsight.propagation.model import Frame, Match, Version


def rename_map(stmt: ast.stmt, new_block: list[ast.stmt], old_frame: Frame, match: Match,
               new: Version, old: Version) -> dict[str, str]:
    """Map each name the statement reads to what the old code at that place calls it.

    Evidence is gathered from the nearest block outward and a name is
    decided as soon as the evidence is clear: the same name wins any tie; a
    different name needs weight 2 (a binding, or two uses), since one
    coincidentally similar line (``print(epoch, acc)`` against
    ``print(epoch, loss)``) must not turn ``acc`` into ``loss``. Undecided
    names keep their spelling, and ``check_defined`` judges them.
    """
    names = list(dict.fromkeys(text for _, text in read_refs(stmt)))
    renames = {n: flor_spelling(n, new, old) for n in names if new.info.flor.refers_to_flordb(n)}
    others = [s for s in new_block if s is not stmt]
    seen: set = set()
    levels = [lambda: collect_votes(others, old_frame.block, new.info, old.info, seen)]
    levels += [lambda fn=fn: add_votes(Counter(), call_site_pairs(fn, new.tree))
               for fn in match.dropped if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))]
    levels += [lambda fn=fn: add_votes(Counter(), ((a, p, w) for p, a, w in call_site_pairs(fn, old.tree)))
               for fn in entered_functions(old_frame, match, old)]
    levels += [lambda n=n, o=o: _frame_votes(n, o, new, old, seen) for n, o in match.pairs]
    pending = [n for n in names if n not in renames]
    votes: Counter = Counter()
    for level in levels:
        if not pending:
            break
        votes.update(level())
        for name in list(pending):
            decided = _decide(name, votes)
            if decided is not None:
                renames[name] = decided
                pending.remove(name)
    return {n: o for n, o in renames.items() if n != o}


def entered_functions(old_frame: Frame, match: Match, old: Version) -> list[ast.AST]:
    """Old functions around the insertion point that the current code has inlined.

    Inside such a function the statement's names are the caller's
    arguments under the function's parameter names.
    """
    matched = {id(o.node) for _, o in match.pairs}
    found, node = [], old_frame.node
    while node is not None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and id(node) not in matched:
            found.append(node)
        node = old.parents.get(node)
    return found


def _frame_votes(new_fr: Frame, old_fr: Frame, new: Version, old: Version, seen: set) -> Counter:
    """Votes from a matched enclosing block and its header (loop targets, parameters)."""
    votes = collect_votes(new_fr.block, old_fr.block, new.info, old.info, seen)
    if isinstance(new_fr.node, ast.stmt) and new_fr.field == "body" and (id(new_fr.node), id(old_fr.node)) not in seen:
        seen.add((id(new_fr.node), id(old_fr.node)))
        add_votes(votes, name_pairs(new_fr.node, old_fr.node, new.info, old.info))
    return votes


def _decide(name: str, votes: Counter) -> str | None:
    """The old name for ``name`` if the votes so far are clear, else None."""
    counts = {o: w for (n, o), w in votes.items() if n == name}
    if not counts:
        return None
    top = max(counts.values())
    best = sorted(o for o, w in counts.items() if w == top)
    if name in best:
        return name
    if top < 2:
        return None
    if len(best) > 1:
        raise PropagationError(
            f"variable '{name}' used by the statement corresponds to several names in the old "
            f"version ({', '.join(best)})")
    return best[0]


def flor_spelling(name: str, new: Version, old: Version) -> str:
    """How the old code spells the flordb module or function the statement uses."""
    nf, of = new.info.flor, old.info.flor
    if name in nf.modules:
        if name in of.imported_modules:
            return name
        if of.imported_modules:
            return sorted(of.imported_modules)[0]
        raise PropagationError("the old version does not import flordb under a module name the statement can use")
    wanted = nf.functions[name]
    for alias, func in sorted(of.functions.items()):
        if func == wanted:
            return alias
    if of.imported_modules:
        return f"{sorted(of.imported_modules)[0]}.{wanted}"
    raise PropagationError(f"the old version does not import flordb's '{wanted}'")


